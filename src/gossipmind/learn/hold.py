"""How long a steady stream of reports of one key is held before it is written.

A report op is kept forever on every node, so a pattern (or a fix's outcomes)
that a node's agent reports without pause must not cost one op per window: a
fleet reporting 6 failures a second grew every node by ~21 000 ops an hour
(docs/reliability.md, "Soak"). Learning, though, needs a pattern's *first*
reports fast: thresholds count distinct reporters, so each node's first op of a
pattern is what lets it cross.

The rule (per key: a pattern id, or a fix id for outcomes). A key's *stream*
is its reports since it was last quiet, quiet meaning that no report of it came
for ``max_ms`` after its last write:

- The first reports of a stream are written at the end of their window, as
  without a hold.
- Then the stream is held, between two writes, for as long as it had lasted at
  the last write (at least one window, at most ``max_ms``): a dense stream is
  written after 1, 2, 4, 8, … windows, then once every ``max_ms``; a sparse one
  (a report every few minutes) is soon written once every ``max_ms`` too.

So at any time at least the first half of a stream is written (learning's
evidence lags by a factor of two at most), a report waits at most ``max_ms``
(plus one window), and a steady stream costs one op per key per node per
``max_ms``. Memory is bounded: at most ``max_keys`` keys are remembered; beyond
that, the key written longest ago is forgotten (its next reports start a new
stream: an op sooner, nothing lost).

The state is kept in memory, and rebuilt when a node starts (:meth:`Hold.replay`)
from what it already has: its own ops. A report op's ts is the time its key was
written here, and its window starts at the stream's first report it carries (the
``first_ms`` this was told), so replaying a node's recent ops gives the hold that
wrote them (node/reportstart.py).

Pure: no clock is read here; the caller passes ``now_ms``.
"""

from __future__ import annotations

from collections.abc import Iterable

from gossipmind.core.errors import ConfigError

__all__ = ["Hold"]


class Hold:
    """The per-key hold of a stream of reports (see the module's docstring)."""

    def __init__(
        self, window_ms: int, max_ms: int, *, max_keys: int = 16_384, grain_ms: int = 0
    ) -> None:
        if window_ms < 1 or max_ms < 0 or max_keys < 1 or grain_ms < 0:
            raise ConfigError(
                "a hold needs window_ms >= 1, max_ms >= 0, max_keys >= 1 and grain_ms >= 0"
            )
        self.window_ms = window_ms
        self.max_ms = max_ms
        self.max_keys = max_keys
        # the first_ms told are rounded down to it at most (a pattern's op shows its
        # window in whole seconds): a quiet key is forgotten that much later, so that
        # a report after it was forgotten starts a new stream in a replay too
        self.grain_ms = grain_ms
        self._last: dict[bytes, tuple[int, int]] = {}  # key -> (last written, stream start)

    def __len__(self) -> int:
        return len(self._last)

    @property
    def enabled(self) -> bool:
        """Whether anything is ever held (a ``max_ms`` above the window)."""
        return self.max_ms > self.window_ms

    def _hold(self, last: tuple[int, int]) -> int:
        return min(max(last[0] - last[1], self.window_ms), self.max_ms)

    def due(self, key: bytes, now_ms: int) -> bool:
        """Whether the reports of ``key`` are to be written now (not held)."""
        last = self._last.get(key)
        if last is None:
            return True
        return now_ms - last[0] >= self._hold(last) or now_ms < last[0]  # (clock stepped back)

    def held_until(self, key: bytes) -> int | None:
        """When the hold of ``key`` ends (``None``: it is quiet)."""
        last = self._last.get(key)
        return None if last is None else last[0] + self._hold(last)

    def written(self, key: bytes, now_ms: int, first_ms: int) -> None:
        """The reports of ``key`` since ``first_ms`` (its earliest) were written at
        ``now_ms``: its stream goes on, or starts at ``first_ms`` after a quiet."""
        if not self.enabled:
            return
        last = self._last.pop(key, None)
        if last is None or first_ms - last[0] > self.max_ms or now_ms < last[0]:
            start = min(first_ms, now_ms)  # quiet until now: a stream starts
        else:
            start = last[1]
        self._last[key] = (now_ms, start)  # (re-inserted: the dict is oldest first)
        if len(self._last) > self.max_keys:
            del self._last[next(iter(self._last))]

    def forget_quiet(self, now_ms: int) -> int:
        """Forget the keys not written for longer than ``max_ms`` (plus ``grain_ms``);
        returns how many (their next reports come after a quiet: a new stream either
        way)."""
        limit = self.max_ms + self.grain_ms
        quiet = [k for k, (at, _) in self._last.items() if now_ms - at > limit]
        for k in quiet:
            del self._last[k]
        return len(quiet)

    def replay(self, writes: Iterable[tuple[bytes, int, int]], now_ms: int) -> int:
        """Rebuild the hold from the writes it was told before a restart: ``(key,
        now_ms, first_ms)`` of each :meth:`written`, oldest first; returns how many
        keys are held at ``now_ms``.

        The writes need go back only ``3 * max_ms``: a stream that began before
        that and still goes on is older than ``max_ms`` at its last write either
        way (held ``max_ms``), and an older write never matters otherwise. The
        :meth:`forget_quiet` calls between the writes are left out: a key they
        forgot starts a new stream at its next write all the same, and the keys
        ``max_keys`` pushes out first are the quiet ones, written longest ago."""
        for key, at, first in writes:
            self.written(key, at, first)
        self.forget_quiet(now_ms)
        return len(self)
