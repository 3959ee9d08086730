"""Failures and outcomes from the agent, batched per window into ops.

The raw failure (message, context) is reduced to its pattern on arrival and
never stored or sent; only the reduced pattern and bounded numbers are kept.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from gossipmind.core.errors import GossipmindError, InvalidOp, SchemaError
from gossipmind.core.schema import MAX_COUNTER
from gossipmind.learn.batcher import ReportBatcher
from gossipmind.learn.patterns import Failure, Reduced, reduce
from gossipmind.learn.taxonomy import Rule
from gossipmind.node.writes import Commit

log = logging.getLogger("gossipmind.node.reporter")

Write = Callable[[str, dict[str, Any]], Awaitable[object]]
MAX_UNWRITTEN = 10_000


class _Bounded(deque[tuple[str, dict[str, Any]]]):
    """A queue of unwritten bodies that drops (and counts) its oldest when full."""

    def __init__(self, limit: int, owner: Reporter) -> None:
        super().__init__()
        self._limit, self._owner = limit, owner

    def append(self, item: tuple[str, dict[str, Any]]) -> None:
        if len(self) >= self._limit:
            self.popleft()
            self._owner.dropped += 1
        super().append(item)


class Reporter:
    def __init__(
        self,
        write: Write,
        now_ms: Callable[[], int],
        *,
        window_ms: int = 2000,
        rules: tuple[Rule, ...] = (),
    ) -> None:
        self._write = write
        self._now = now_ms
        self.window_ms = window_ms
        self.rules = rules
        self.failures = ReportBatcher(window_ms=window_ms)
        self.outcomes: dict[bytes, list[int]] = {}
        self._outcome_window: list[int] = []
        self.local_counts: dict[bytes, int] = {}
        self._wake = trio.Event()
        # bodies batched but not written yet, oldest first (see flush)
        self._ready: deque[tuple[str, dict[str, Any]]] = _Bounded(MAX_UNWRITTEN, self)
        self.dropped = 0  # bodies dropped: refused as invalid, or beyond MAX_UNWRITTEN

    def failure(self, failure: Failure) -> Reduced:
        reduced = reduce(failure, self.rules)
        if not self.failures.add(reduced, self._now()):
            # the window holds its cap of distinct patterns: close it now (its
            # bodies wait to be written) rather than drop an acknowledged report
            self._close_failures()
            self.failures.add(reduced, self._now())
            self._wake.set()
        self.local_counts[reduced.pattern] = self.local_counts.get(reduced.pattern, 0) + 1
        return reduced

    def outcome(self, fix: bytes, attempts: int, successes: int) -> None:
        now = self._now()
        o = self.outcomes.get(fix)
        if o is not None and o[0] + attempts > MAX_COUNTER:
            # one op's counters are bounded (schema): close this one, start another
            self._ready.append(self._outcome_body(fix, o))
            o = None
        if o is None:
            o = self.outcomes[fix] = [0, 0]
        o[0] += attempts
        o[1] += successes
        if not self._outcome_window:
            self._outcome_window = [now, now]
        self._outcome_window[1] = now

    def _outcome_body(self, fix: bytes, counts: list[int]) -> tuple[str, dict[str, Any]]:
        window = list(self._outcome_window or [self._now()] * 2)
        body = {"fix": fix, "attempts": counts[0], "successes": counts[1], "window": window}
        return ("fix.outcome", body)

    def _close_failures(self) -> None:
        for body in self.failures.flush(self._now()):
            self._ready.append(("pattern.report", body))

    def _close_window(self) -> None:
        """Move everything batched into the queue of bodies to write."""
        self._close_failures()
        for fix, counts in sorted(self.outcomes.items()):
            self._ready.append(self._outcome_body(fix, counts))
        self.outcomes, self._outcome_window = {}, []

    def _done(self, kind: str, body: dict[str, Any]) -> None:
        """A body left the queue (written or dropped): its failures are no longer unsent."""
        if kind == "pattern.report":
            left = self.local_counts.get(body["pattern"], 0) - int(body["count"])
            if left > 0:
                self.local_counts[body["pattern"]] = left
            else:
                self.local_counts.pop(body["pattern"], None)

    async def flush(self) -> int:
        """Write what is batched now, and what an earlier flush could not; return the
        number of ops written.

        A body the write refuses as invalid is dropped (logged, counted in
        ``dropped``): writing it again would fail again. Any other failure (the
        store) keeps that body and the ones after it for the next flush and
        raises. Bounded: at most ``MAX_UNWRITTEN`` bodies wait; beyond that the
        oldest are dropped and counted.
        """
        self._close_window()
        written = 0
        while self._ready:
            kind, body = self._ready[0]
            try:
                await self._write(kind, body)
                written += 1
            except (SchemaError, InvalidOp) as exc:
                self.dropped += 1
                log.warning("dropped a %s that was refused: %s", kind, exc)
            self._ready.popleft()  # written or refused; on other errors it stays
            self._done(kind, body)
        return written

    def flush_into(self, commit: Commit) -> int:
        """Write everything batched with ``commit``, synchronously: for a node that
        is stopping (its tasks may already be cancelled), so that reports the agent
        was told were accepted are not lost. Returns the number of ops written."""
        self._close_window()
        bodies = list(self._ready)
        self._ready.clear()
        if not bodies:
            return 0
        now = self._now()
        try:
            results = commit([(kind, body, now) for kind, body in bodies])
        except GossipmindError as exc:
            self.dropped += len(bodies)
            log.warning("could not write %d reports while stopping: %s", len(bodies), exc)
            return 0
        written = sum(1 for r in results if not isinstance(r, GossipmindError))
        self.dropped += len(bodies) - written
        for kind, body in bodies:
            self._done(kind, body)
        return written

    async def run(self) -> None:
        """Flush every window, or at once when a window fills up, forever (a failed
        write is logged and retried next window)."""
        while True:
            with trio.move_on_after(self.window_ms / 1000):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.flush()
            except GossipmindError as exc:
                log.warning("could not write reports (kept for the next window): %s", exc)
