"""The SDK's fix cache: the fixes of the node's accepted set, kept fresh by a thread
following its event stream, and the lookups that read it (or ask the node).

Moved out of ``client.py`` (which keeps the lifecycle, reporting and sending) so
that both stay under the module size limit. :class:`FixCache` is a base class of
:class:`~gossipmind.api.client.Client`: its methods read and write the attributes
``Client.__init__`` sets, declared here for the type checker.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from gossipmind.api.aliases import Aliases
from gossipmind.api.outbox import Sender, backoff_delays
from gossipmind.api.records import ClientStats, Fix
from gossipmind.core.errors import GossipmindError
from gossipmind.learn.rank import rank

if TYPE_CHECKING:
    from gossipmind.api.transport import Http

__all__ = ["FixCache"]

log = logging.getLogger("gossipmind.sdk")


class FixCache:
    """Accepted fixes by pattern, from the node's event stream (set up by ``Client``)."""

    canary: bool
    aliases: Aliases
    stats: ClientStats
    _cache: dict[bytes, dict[bytes, Fix]]
    _ready: threading.Event
    _stop: threading.Event
    _streams: bool
    _sender: Sender

    if TYPE_CHECKING:  # Client's (client.py)

        def _resume(self) -> None: ...

        def _api(self) -> Http: ...

        def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]: ...

        def _drop_http(self, only: Http | None = None) -> None: ...

        def _note_error(self, text: str) -> None: ...

    # -- fix lookups: from the cache, or asked of the node ----------------------------

    def _lookup(self, pattern: bytes) -> Fix | None:
        """The decorator's fix lookup: from the cache when the event stream keeps it
        (never waiting for the node); else (``stream=False``, canary) :meth:`fix_for`."""
        if self.lookup_waits():
            return self.fix_for(pattern)
        self._resume()
        return self._cached(pattern)

    def lookup_waits(self) -> bool:
        """Whether the decorator's fix lookup asks the node (one request)."""
        return not self._streams or self.canary

    def _cached(self, pattern: bytes) -> Fix | None:
        fixes = self._cache.get(pattern) or self._cache.get(self.aliases.get(pattern))
        if fixes:
            self.stats.cache_hits += 1
            best = rank(
                [
                    {
                        "fix": f.id,
                        "attempts": f.attempts,
                        "successes": f.successes,
                        "drill_bp": f.drill_bp,
                    }
                    for f in fixes.values()
                ]
            )
            return fixes[bytes(best[0]["fix"])]
        self.stats.cache_misses += 1
        return None

    def fix_for(self, pattern: bytes) -> Fix | None:
        """The best fix for ``pattern``: from the stream's cache, else asked of the node
        (``stream=False``: every time, so a revoked fix is dropped; if the node cannot
        be asked, what it last said is used: fail open)."""
        self._resume()
        if self._streams:
            fix = self._cached(pattern)
            if fix is not None:
                return fix
            if self._ready.is_set() and not self.canary:
                return None  # the stream is live: no accepted fix exists
        try:
            flag = "&canary=1" if self.canary else ""
            asked = self.aliases.get(pattern)  # the node's id for it, if another
            status, doc = self._call("GET", f"/v1/fix?pattern={asked.hex()}{flag}")
        except GossipmindError:
            return None if self._streams else self._cached(pattern)  # fail open
        if status == 404 and not self._streams:
            self._cache.pop(pattern, None)  # none accepted now (revoked, say)
        if status != 200:
            return None if self._streams or status == 404 else self._cached(pattern)
        fix = Fix.from_json(doc)
        if doc.get("status") == "accepted":
            if self._streams:
                # a live stream delivers accepted fixes itself; caching this answer could
                # outlive a revoke the stream told meanwhile (a canary kept applying it)
                if not self._ready.is_set():
                    self._cache.setdefault(pattern, {})[fix.id] = fix
            else:  # the node's answer now: the only fix this client knows for the pattern
                self._cache[pattern] = {fix.id: fix}
        elif not self._streams:  # a canary's provisional fix: none is accepted now
            self._cache.pop(pattern, None)
        return fix

    def preventive_fix(self, service: str, operation: str) -> Fix | None:
        """An accepted fix for this call that carries an idempotency key, if any.

        A non-idempotent call that failed without a key can never be retried safely
        (the first attempt may have been applied), so for such calls the SDK applies
        a learned fix from the first attempt, key included.
        """
        from gossipmind.learn.patterns import normalise_name

        self._resume()
        svc, op = normalise_name(service), normalise_name(operation)
        candidates = [
            f
            for fixes in list(self._cache.values())
            for f in fixes.values()
            if f.service == svc and f.operation == op and f.has_idempotency_key
        ]
        if not candidates:
            return None
        # the failure is not known yet: retrying the most error classes, then the best ranked
        most = max(len(f.retried_classes) for f in candidates)
        best = rank(
            {"fix": f.id, "attempts": f.attempts, "successes": f.successes, "drill_bp": f.drill_bp}
            for f in candidates
            if len(f.retried_classes) == most
        )
        return next(f for f in candidates if f.id == best[0]["fix"])

    # -- the fix cache, fed by the event stream -------------------------------------

    def _apply_event(self, event: str, doc: dict[str, Any]) -> None:
        if event == "ready":
            self._ready.set()
            return
        if event != "fix":
            return
        fix = Fix.from_json(doc)
        per = dict(self._cache.get(fix.pattern, {}))
        if doc.get("status") == "accepted":
            per[fix.id] = fix
        else:
            per.pop(fix.id, None)
        if per:
            self._cache[fix.pattern] = per
        else:
            self._cache.pop(fix.pattern, None)

    def _follow(self) -> None:
        delays = backoff_delays()
        while not self._stop.is_set():
            try:
                fresh: dict[bytes, dict[bytes, Fix]] = {}
                for event, doc in self._api().events(self._stop):
                    if event == "fix" and not self._ready.is_set():
                        fix = Fix.from_json(doc)
                        fresh.setdefault(fix.pattern, {})[fix.id] = fix
                        continue
                    if event == "ready":
                        self._cache = fresh
                        self.stats.stream_connected = True
                        delays = backoff_delays()
                        self._sender.wake(now=True)  # the node is (back) up
                    self._apply_event(event, doc)
            except GossipmindError as exc:
                log.debug("event stream: %s", exc)
                self._drop_http()
            except Exception as exc:  # noqa: BLE001 - a bug: say so, but keep following
                log.warning("gossipmind: event stream failed: %r", exc)
                self._note_error(f"/v1/events: {exc!r}")
                self._drop_http()
            self._ready.clear()
            self.stats.stream_connected = False
            self._stop.wait(next(delays))
