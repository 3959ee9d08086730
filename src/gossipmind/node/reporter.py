"""Failures and outcomes from the agent, batched per window into ops.

The raw failure (message, context) is reduced to its pattern on arrival and
never stored or sent; only the reduced pattern and bounded numbers are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from gossipmind.core.errors import GossipmindError
from gossipmind.learn.batcher import ReportBatcher
from gossipmind.learn.patterns import Failure, Reduced, reduce
from gossipmind.learn.taxonomy import Rule

log = logging.getLogger("gossipmind.node.reporter")

Write = Callable[[str, dict[str, Any]], Awaitable[object]]


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

    def failure(self, failure: Failure) -> Reduced:
        reduced = reduce(failure, self.rules)
        self.failures.add(reduced, self._now())
        self.local_counts[reduced.pattern] = self.local_counts.get(reduced.pattern, 0) + 1
        return reduced

    def outcome(self, fix: bytes, attempts: int, successes: int) -> None:
        now = self._now()
        o = self.outcomes.setdefault(fix, [0, 0])
        o[0] += attempts
        o[1] += successes
        if not self._outcome_window:
            self._outcome_window = [now, now]
        self._outcome_window[1] = now

    async def flush(self) -> int:
        """Write what is batched now; return the number of ops written."""
        now = self._now()
        written = 0
        for body in self.failures.flush(now):
            await self._write("pattern.report", body)
            written += 1
        outcomes, self.outcomes = self.outcomes, {}
        window, self._outcome_window = self._outcome_window or [now, now], []
        for fix, (attempts, successes) in sorted(outcomes.items()):
            body = {"fix": fix, "attempts": attempts, "successes": successes, "window": window}
            await self._write("fix.outcome", body)
            written += 1
        return written

    async def run(self) -> None:
        """Flush every window, forever (a failed write is logged and retried next window)."""
        while True:
            await trio.sleep(self.window_ms / 1000)
            try:
                await self.flush()
            except GossipmindError as exc:
                log.warning("could not write reports: %s", exc)
