"""Failures and outcomes from the agent, batched per window into ops.

The raw failure (message, context) is reduced to its pattern on arrival and
never stored or sent; only the reduced pattern and bounded numbers are kept.

A report may carry the SDK's random id (docs/sdk.md, "Delivery"): a report whose
id the node holds already — waiting to be written here, or committed with its op
(store/receipts.py) — is answered as taken and not counted again. The ids stay
beside the bodies, never in them: they are recorded in the transaction that
commits their body's op (``ids``), and are never part of an op.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from gossipmind.core.errors import GossipmindError, InvalidOp, SchemaError
from gossipmind.core.saying import Bounded
from gossipmind.core.schema import MAX_COUNTER
from gossipmind.learn.batcher import ReportBatcher
from gossipmind.learn.patterns import Failure, Reduced, reduce
from gossipmind.learn.taxonomy import Rule
from gossipmind.node.writes import Commit

log = logging.getLogger("gossipmind.node.reporter")
_clock = time.monotonic  # of the warnings' rate (tests move it): not the wall clock

Write = Callable[[str, dict[str, Any]], Awaitable[object]]
Body = tuple[str, dict[str, Any]]  # kind, body
Ids = tuple[bytes, ...]  # the report ids a body carries
MAX_UNWRITTEN = 10_000
MAX_PENDING_IDS = 100_000  # ids of reports taken, not written yet (beyond: not remembered)
FULL = "MAX_UNWRITTEN reports wait to be written already (the oldest is dropped)"


class _Bounded(deque[Body]):
    """A queue of unwritten bodies that drops its oldest when full.

    The body being written is not in it (see ``Reporter.flush``), so it is never
    the one dropped; a dropped body leaves through ``Reporter._dropped``.
    """

    def __init__(self, limit: int, owner: Reporter) -> None:
        super().__init__()
        self._limit, self._owner = limit, owner

    def append(self, item: Body) -> None:
        if self and len(self) >= self._limit:
            self._owner._dropped(*self.popleft(), FULL)
        super().append(item)


@dataclass(eq=False)
class _InFlight:
    """The body ``flush`` is writing, out of the queue until the write ends."""

    body: Body
    durable: bool = False  # its op is committed (the write may not have returned yet)


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
        self.known: Callable[[bytes], bool] = lambda rid: False  # committed (the store's)
        self._now = now_ms
        self.window_ms = window_ms
        self.rules = rules
        self.failures = ReportBatcher(window_ms=window_ms)
        self.outcomes: dict[bytes, list[int]] = {}
        self._outcome_window: list[int] = []
        self.local_counts: dict[bytes, int] = {}
        self._wake = trio.Event()
        # bodies batched but not written yet, oldest first (see flush)
        self._ready: deque[Body] = _Bounded(MAX_UNWRITTEN, self)
        self._inflight: _InFlight | None = None
        self._flushing = trio.Lock()  # one flush at a time: one body in flight
        self.dropped = 0  # bodies not written: refused as invalid, or beyond MAX_UNWRITTEN
        self._warned_full = False  # since the last write that succeeded
        # one line per refused body: a key that is not (or no longer) a member
        # has every report of every window refused, one body per pattern
        self._refusals = Bounded(log, unsaid="{} more were dropped and not said")
        self._pending_ids: set[bytes] = set()  # taken, not committed yet
        self._window_ids: dict[bytes, list[bytes]] = {}  # pattern -> its window's ids
        self._outcome_ids: dict[bytes, list[bytes]] = {}  # fix -> its window's ids
        self._receipts: dict[int, tuple[dict[str, Any], tuple[bytes, ...]]] = {}  # id(body)
        self.duplicates = 0  # reports whose id was taken already: not counted again

    def seen(self, rid: bytes) -> bool:
        """Whether the report with id ``rid`` was taken already (written or not)."""
        return rid in self._pending_ids or self.known(rid)

    def _remember(self, rid: bytes | None, into: dict[bytes, list[bytes]], key: bytes) -> None:
        if rid is not None and len(self._pending_ids) < MAX_PENDING_IDS:
            self._pending_ids.add(rid)
            into.setdefault(key, []).append(rid)

    def ids(self, requests: Sequence[tuple[str, dict[str, Any], int]]) -> list[Ids]:
        """The report ids each request's body carries (none for bodies not ours)."""
        out: list[Ids] = []
        for _, body, _ in requests:
            entry = self._receipts.get(id(body))
            out.append(entry[1] if entry is not None and entry[0] is body else ())
        return out

    def _queue(self, item: Body, ids: list[bytes] | None) -> None:
        if ids:
            self._receipts[id(item[1])] = (item[1], tuple(ids))
        self._ready.append(item)

    def failure(self, failure: Failure, rid: bytes | None = None) -> Reduced:
        """Count a failure (the id ``rid`` of one taken already: not again)."""
        reduced = reduce(failure, self.rules)
        if rid is not None and self.seen(rid):
            self.duplicates += 1
            return reduced
        if not self.failures.add(reduced, self._now()):
            # the window holds its cap of distinct patterns: close it now (its
            # bodies wait to be written) rather than drop an acknowledged report
            self._close_failures()
            self.failures.add(reduced, self._now())
            self._wake.set()
        self.local_counts[reduced.pattern] = self.local_counts.get(reduced.pattern, 0) + 1
        self._remember(rid, self._window_ids, reduced.pattern)
        return reduced

    def outcome(self, fix: bytes, attempts: int, successes: int, rid: bytes | None = None) -> None:
        if rid is not None and self.seen(rid):
            self.duplicates += 1
            return
        now = self._now()
        o = self.outcomes.get(fix)
        if o is not None and o[0] + attempts > MAX_COUNTER:
            # one op's counters are bounded (schema): close this one, start another
            self._queue(self._outcome_body(fix, o), self._outcome_ids.pop(fix, None))
            o = None
        if o is None:
            o = self.outcomes[fix] = [0, 0]
        o[0] += attempts
        o[1] += successes
        self._remember(rid, self._outcome_ids, fix)
        if not self._outcome_window:
            self._outcome_window = [now, now]
        self._outcome_window[1] = now

    def _outcome_body(self, fix: bytes, counts: list[int]) -> Body:
        window = list(self._outcome_window or [self._now()] * 2)
        body = {"fix": fix, "attempts": counts[0], "successes": counts[1], "window": window}
        return ("fix.outcome", body)

    def _close_failures(self) -> None:
        for body in self.failures.flush(self._now()):
            self._queue(("pattern.report", body), self._window_ids.pop(body["pattern"], None))
        for ids in self._window_ids.values():  # (none: every failure is in a body)
            self._pending_ids.difference_update(ids)
        self._window_ids.clear()

    def _close_window(self) -> None:
        """Move everything batched into the queue of bodies to write."""
        self._close_failures()
        for fix, counts in sorted(self.outcomes.items()):
            self._queue(self._outcome_body(fix, counts), self._outcome_ids.pop(fix, None))
        self.outcomes, self._outcome_window, self._outcome_ids = {}, [], {}

    def _done(self, kind: str, body: dict[str, Any]) -> None:
        """A body left the queue (written or dropped): its failures are no longer unsent,
        and its report ids are the store's (committed with it) or forgotten."""
        entry = self._receipts.pop(id(body), None)
        if entry is not None and entry[0] is body:
            self._pending_ids.difference_update(entry[1])
        if kind == "pattern.report":
            left = self.local_counts.get(body["pattern"], 0) - int(body["count"])
            if left > 0:
                self.local_counts[body["pattern"]] = left
            else:
                self.local_counts.pop(body["pattern"], None)

    def _dropped(self, kind: str, body: dict[str, Any], why: str) -> None:
        """A body that will never be written: count it, and its failures are no
        longer unsent. Logged (once per overflow, not once per body)."""
        self.dropped += 1
        self._done(kind, body)
        if why != FULL:
            self._refusals.warning(_clock(), "dropped an unwritten %s: %s", kind, why)
        elif not self._warned_full:
            log.warning("dropped an unwritten %s: %s", kind, why)
        self._warned_full = self._warned_full or why == FULL

    def durable(self) -> None:
        """The body in flight is committed: its write may still wait (for gossip),
        but it must not be written again (``flush_into``, or a flush after a
        cancelled one). The node's write calls this (``GroupCommit`` ``durable``),
        in the same step as the commit that applied the op to the fold: its failures
        leave ``local_counts`` there and then, so that no reader on the loop sees
        them both counted in the fold and still unsent (``/v1/failures/count``
        gave twice the count while gossip took the op)."""
        flight = self._inflight
        if flight is not None and not flight.durable:
            flight.durable = True
            self._done(*flight.body)

    async def flush(self) -> int:
        """Write what is batched now, and what an earlier flush could not; return the
        number of ops written.

        A body the write refuses as invalid is dropped (logged, counted in
        ``dropped``): writing it again would fail again. Any other failure (the
        store, or a cancelled flush) keeps that body, unless its op was committed
        (see :meth:`durable`), and the ones after it for the next flush and
        raises. Bounded: at most ``MAX_UNWRITTEN`` bodies wait besides the one
        being written; beyond that the oldest are dropped and counted.
        """
        self._close_window()
        written = 0
        async with self._flushing:
            while self._ready:
                flight = self._inflight = _InFlight(self._ready.popleft())
                kind, body = flight.body
                try:
                    await self._write(kind, body)
                    written += 1
                except (SchemaError, InvalidOp) as exc:
                    self._dropped(kind, body, f"refused: {exc}")
                    continue
                except BaseException:
                    # committed, then cancelled or failed on the way out: counted as sent
                    # by durable(); else not written: it is the oldest again
                    if not flight.durable:
                        self._ready.appendleft(flight.body)
                    raise
                finally:
                    self._inflight = None
                self._warned_full = False
                if not flight.durable:  # a write that does not say when it commits
                    self._done(kind, body)
        return written

    def flush_into(self, commit: Commit) -> int:
        """Write everything batched with ``commit``, synchronously: for a node that
        is stopping, so that reports the agent was told were accepted are not lost.
        Returns the number of ops written.

        A body a flush is writing right now is not written again: if that write
        does not commit (it is cancelled), the flush puts the body back, for the
        next ``flush_into``. A node calls this once its tasks have stopped.
        """
        self._close_window()
        bodies = list(self._ready)
        self._ready.clear()
        if not bodies:
            return 0
        now = self._now()
        try:
            results = commit([(kind, body, now) for kind, body in bodies])
        except GossipmindError as exc:
            log.warning("could not write %d reports while stopping: %s", len(bodies), exc)
            results = [exc] * len(bodies)
        written = 0
        for (kind, body), result in zip(bodies, results, strict=True):
            if isinstance(result, GossipmindError):
                self.dropped += 1
            else:
                written += 1
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
