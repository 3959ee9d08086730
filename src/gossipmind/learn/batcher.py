"""Batch reduced failures into one ``pattern.report`` body per pattern per window.

The batcher reads no clock: the caller passes ``now_ms`` to :meth:`add`,
:meth:`due` and :meth:`flush`. Memory is bounded: at most ``max_patterns``
distinct patterns are tracked per window; a failure of a new pattern beyond
that is not tracked but counted in :attr:`ReportBatcher.overflow` (and
:attr:`ReportBatcher.total_overflow`), so the loss is visible.

A body's ``window`` is ``[first failure of the pattern, max(last failure,
flush time)]``; its stats are sums, counts and a maximum, clamped to the
schema's bounds; the status histogram keeps the 32 most frequent codes.
Bodies come out sorted by pattern id, so a flush is deterministic.

With a :class:`~gossipmind.learn.hold.Hold`, a flush writes only the patterns
whose hold has passed; a held pattern's failures stay in the batcher (its body's
window grows) until a later flush, or one with ``force``. The hold is told a
written stream's first report as its body's window starts (in whole seconds), so
that a restarted node can rebuild it from its ops (the hold's ``grain_ms`` is
then a second).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gossipmind.core.errors import ConfigError
from gossipmind.core.schema import MAX_COUNTER
from gossipmind.learn.hold import Hold
from gossipmind.learn.patterns import Reduced

__all__ = ["MAX_STATUS_CODES", "ReportBatcher"]

MAX_STATUS_CODES = 32
_MAX_TS = 2**53
_MAX_SUM = 2**53
_MAX_RETRY_AFTER = 2**31


@dataclass
class _Acc:
    first: Reduced
    start_ms: int
    last_ms: int
    count: int = 0
    latency_sum: int = 0
    latency_n: int = 0
    retry_after_max: int = 0
    retry_after_n: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, r: Reduced, now_ms: int) -> None:
        self.last_ms = max(self.last_ms, now_ms)
        if self.count >= MAX_COUNTER:
            return
        self.count += 1
        if r.latency_ms is not None:
            self.latency_sum = min(self.latency_sum + r.latency_ms, _MAX_SUM)
            self.latency_n += 1
        if r.retry_after_ms is not None:
            self.retry_after_max = max(
                self.retry_after_max, min(r.retry_after_ms, _MAX_RETRY_AFTER)
            )
            self.retry_after_n += 1
        if r.status is not None:
            self.statuses[r.status] = self.statuses.get(r.status, 0) + 1

    def body(self, now_ms: int) -> dict[str, Any]:
        top = sorted(self.statuses.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_STATUS_CODES]
        r = self.first
        return {
            "pattern": r.pattern,
            "service": r.service,
            "operation": r.operation,
            "error_class": r.error_class,
            "template": r.template,
            "shape": r.shape,
            "count": self.count,
            "window": _whole_seconds(self.start_ms, max(self.last_ms, now_ms)),
            "stats": {
                "latency_ms_sum": self.latency_sum,
                "latency_n": self.latency_n,
                "retry_after_ms_max": self.retry_after_max,
                "retry_after_n": self.retry_after_n,
                "status": {f"{code:03d}": n for code, n in sorted(top)},
            },
        }


def _clamp_ts(now_ms: int) -> int:
    if isinstance(now_ms, bool) or not isinstance(now_ms, int):
        raise ConfigError(f"now_ms must be an integer, got {type(now_ms).__name__}")
    return min(max(now_ms, 0), _MAX_TS)


class ReportBatcher:
    """Accumulate :class:`Reduced` failures per pattern; flush one report body per pattern."""

    def __init__(
        self, *, window_ms: int = 60_000, max_patterns: int = 1024, hold: Hold | None = None
    ) -> None:
        if window_ms < 1 or max_patterns < 1:
            raise ConfigError("window_ms and max_patterns must be positive")
        self.window_ms = window_ms
        self.max_patterns = max_patterns
        self.hold = hold
        self.overflow = 0
        self.total_overflow = 0
        self._opened_ms: int | None = None
        self._acc: dict[bytes, _Acc] = {}

    def __len__(self) -> int:
        """Distinct patterns pending in the current window."""
        return len(self._acc)

    @property
    def opened_ms(self) -> int | None:
        """When the current window received its first failure (``None`` if empty)."""
        return self._opened_ms

    def add(self, reduced: Reduced, now_ms: int) -> bool:
        """Count one failure at ``now_ms``. False if it overflowed the pattern cap."""
        now = _clamp_ts(now_ms)
        if self._opened_ms is None:
            self._opened_ms = now
        acc = self._acc.get(reduced.pattern)
        if acc is None:
            if len(self._acc) >= self.max_patterns:
                self.overflow += 1
                self.total_overflow += 1
                return False
            acc = self._acc[reduced.pattern] = _Acc(reduced, now, now)
        acc.add(reduced, now)
        return True

    def due(self, now_ms: int) -> bool:
        """True when the window holds failures and is at least ``window_ms`` old."""
        opened = self._opened_ms
        return opened is not None and _clamp_ts(now_ms) - opened >= self.window_ms

    def held(self, now_ms: int) -> int:
        """Patterns whose failures are held: a flush at ``now_ms`` would keep them."""
        hold = self.hold
        return 0 if hold is None else sum(1 for p in self._acc if not hold.due(p, now_ms))

    def flush(self, now_ms: int, *, force: bool = False) -> list[dict[str, Any]]:
        """One ``pattern.report`` body per pattern that is due (sorted by pattern id),
        every pattern with ``force`` or without a hold; opens a new window."""
        now = _clamp_ts(now_ms)
        hold = self.hold
        due = sorted(
            p
            for p, acc in self._acc.items()
            if hold is None or force or hold.due(p, now) or acc.count >= MAX_COUNTER
        )
        bodies = [self._acc.pop(p).body(now) for p in due]
        if hold is not None:
            for body in bodies:  # (its start as the op shows it: node/reportstart.py)
                hold.written(body["pattern"], now, body["window"][0])
            hold.forget_quiet(now)
        self._opened_ms = now if self._acc else None
        self.overflow = 0
        return bodies


def _whole_seconds(start_ms: int, end_ms: int) -> list[int]:
    """The window widened to whole seconds: the millisecond of a failure is not
    shared (a provider's log could match it to one request; docs/security.md)."""
    return [start_ms - start_ms % 1000, min(-(-end_ms // 1000) * 1000, 2**53)]
