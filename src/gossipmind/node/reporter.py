"""Failures and outcomes from the agent, batched per window into ops.

The raw failure (message, context) is reduced to its pattern on arrival and
never stored or sent; only the reduced pattern and bounded numbers are kept.

A report may carry the SDK's random id (docs/sdk.md, "Delivery"): a report whose
id the node holds already — waiting to be written here, or committed with its op
(store/receipts.py) — is answered as taken and not counted again. The ids stay
beside the bodies, never in them: they are recorded in the transaction that
commits their body's op (``ids``), and are never part of an op.

A report the API takes (:meth:`Reporter.take_failure`, :meth:`Reporter.take_outcome`)
is journaled before it is counted and answered (store/journal.py): its row is
committed, with those of the reports that came in the same burst (one commit for
them all), then it is counted in the window. The op of a window deletes the rows
it counts in its own transaction; a node that opens its store counts the rows
left by a crash again (:meth:`Reporter.recover`). The journal holds at most
``MAX_JOURNAL`` rows, and no report is taken while ``MAX_UNWRITTEN`` bodies wait:
past either, a report is refused (:class:`Unavailable`, 503: the SDK sends it again).
The journal's commits and the ids taken are node/reportjournal.py's.

A steady stream of one pattern's failures (or one fix's outcomes) is held
(learn/hold.py, ``hold_max_ms``): its first reports are written at the end of
their window, later ones after a hold that doubles up to ``hold_max_ms``, so the
stream costs one op per ``hold_max_ms`` instead of one per window. Held reports
stay journaled, counted in ``local_counts`` and their ids remembered until their
op is committed. Everything held is written at once when a node stops, when the
batcher's pattern cap is reached, or when the journal or the remembered ids
pass half of their bound (``PRESSURE``). A body's op has for its ts the time its
window was closed (:meth:`Reporter.stamp`): the time its key's hold counts from,
which a restarted node reads back from its own ops (node/reportstart.py).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from gossipmind.core import encoding
from gossipmind.core.errors import GossipmindError, InvalidOp, SchemaError, Unavailable
from gossipmind.core.saying import Bounded
from gossipmind.core.schema import MAX_COUNTER
from gossipmind.learn.batcher import ReportBatcher
from gossipmind.learn.hold import Hold
from gossipmind.learn.patterns import Failure, Reduced, reduce
from gossipmind.learn.taxonomy import Rule
from gossipmind.node.reportjournal import BUSY, Journal, ReportJournal
from gossipmind.node.reportparts import FULL, Body, BoundedQueue, InFlight, Taking, failure_data
from gossipmind.node.writes import BURST_S, Commit
from gossipmind.store.journal import Row

log = logging.getLogger("gossipmind.node.reporter")
_clock = time.monotonic  # of the warnings' rate (tests move it): not the wall clock

Write = Callable[[str, dict[str, Any]], Awaitable[object]]
Ids = tuple[bytes, ...]  # the report ids a body carries
MAX_UNWRITTEN = 10_000
MAX_PENDING_IDS = 100_000  # ids of reports taken, not written yet (beyond: not remembered)
MAX_JOURNAL = MAX_PENDING_IDS  # journal rows (reports taken, not written) at most
PRESSURE = 2  # held reports are written when a bound is 1/PRESSURE full


class Reporter(ReportJournal):
    def __init__(
        self,
        write: Write,
        now_ms: Callable[[], int],
        *,
        window_ms: int = 2000,
        rules: tuple[Rule, ...] = (),
        journal: Journal | None = None,
        hold_max_ms: int = 0,
    ) -> None:
        super().__init__(journal)
        self._write = write
        self._now = now_ms
        self.window_ms = window_ms
        self.rules = rules
        hold = Hold(window_ms, hold_max_ms, grain_ms=1000)  # (whole seconds: batcher.py)
        self.failures = ReportBatcher(window_ms=window_ms, hold=hold)
        self.outcome_hold = Hold(window_ms, hold_max_ms)
        self.outcomes: dict[bytes, list[int]] = {}  # fix -> [attempts, successes]
        self._outcome_spans: dict[bytes, list[int]] = {}  # fix -> [first, last] report
        self.local_counts: dict[bytes, int] = {}
        self._wake = trio.Event()
        # bodies batched but not written yet, oldest first (see flush)
        self._ready: deque[Body] = BoundedQueue(MAX_UNWRITTEN, self)
        self._inflight: InFlight | None = None
        self._flushing = trio.Lock()  # one flush at a time: one body in flight
        self.dropped = 0  # bodies not written: refused as invalid, or beyond MAX_UNWRITTEN
        self._warned_full = False  # since the last write that succeeded
        # one line per refused body: a key that is not (or no longer) a member
        # has every report of every window refused, one body per pattern
        self._refusals = Bounded(log, unsaid="{} more were dropped and not said")
        self._window_ids: dict[bytes, list[bytes]] = {}  # pattern -> its window's ids
        self._outcome_ids: dict[bytes, list[bytes]] = {}  # fix -> its window's ids
        self._window_rows: dict[bytes, list[bytes]] = {}  # pattern -> its journal rows
        self._outcome_rows: dict[bytes, list[bytes]] = {}  # fix -> its journal rows
        self._receipts: dict[int, tuple[dict[str, Any], Ids, Ids]] = {}  # id(body)
        self._closed: dict[int, tuple[dict[str, Any], int]] = {}  # id(body): when (stamp)

    def _remember(
        self, key: bytes, rid: bytes | None, row: bytes | None, failure: bool = True
    ) -> None:
        ids, rows = (
            (self._window_ids, self._window_rows)
            if failure
            else (self._outcome_ids, self._outcome_rows)
        )
        if rid is not None and (
            rid in self._pending_ids or len(self._pending_ids) < MAX_PENDING_IDS
        ):
            self._pending_ids.add(rid)
            ids.setdefault(key, []).append(rid)
        if row is not None:
            rows.setdefault(key, []).append(row)

    def ids(self, requests: Sequence[tuple[str, dict[str, Any], int]]) -> list[Ids]:
        """The report ids each request's body carries (none for bodies not ours)."""
        return self.receipts(requests)[0]

    def receipts(
        self, requests: Sequence[tuple[str, dict[str, Any], int]]
    ) -> tuple[list[Ids], list[Ids]]:
        """The report ids and the journal rows of each request's body (none for bodies
        not ours): the store records the ids and deletes the rows with the op."""
        ids: list[Ids] = []
        rows: list[Ids] = []
        for _, body, _ in requests:
            entry = self._receipts.get(id(body))
            ours = entry is not None and entry[0] is body
            ids.append(entry[1] if entry is not None and ours else ())
            rows.append(entry[2] if entry is not None and ours else ())
        return ids, rows

    def stamp(self, body: dict[str, Any], now: int) -> int:
        """The ts of ``body``'s op: when its window was closed, the time its hold
        counts from (``Hold.written``), so that a restart reads it back exactly
        (node/reportstart.py); ``now`` for a body not ours."""
        entry = self._closed.get(id(body))
        return entry[1] if entry is not None and entry[0] is body else now

    def _queue(
        self, item: Body, ids: list[bytes] | None, rows: list[bytes] | None, now: int
    ) -> None:
        self._closed[id(item[1])] = (item[1], now)
        if ids or rows:
            self._receipts[id(item[1])] = (item[1], tuple(ids or ()), tuple(rows or ()))
        self._ready.append(item)

    # -- reports the API takes: journaled before they are answered ----------------

    async def take_failure(self, failure: Failure, rid: bytes | None = None) -> Reduced:
        """Count a failure once its journal row is committed (a duplicate: not again).
        Raises :class:`Unavailable` (nothing taken) when the journal is full or fails."""
        reduced = reduce(failure, self.rules)
        if rid is not None and await self._taken(rid):
            self.duplicates += 1
            return reduced
        now = self._now()
        await self._take(
            "pattern.report",
            rid,
            now,
            failure_data(reduced),
            lambda row: self._count_failure(reduced, rid, row, now),
        )
        return reduced

    async def take_outcome(
        self, fix: bytes, attempts: int, successes: int, rid: bytes | None = None
    ) -> None:
        """Count an outcome once its journal row is committed (see :meth:`take_failure`)."""
        if rid is not None and await self._taken(rid):
            self.duplicates += 1
            return
        now = self._now()
        await self._take(
            "fix.outcome",
            rid,
            now,
            [fix, attempts, successes],
            lambda row: self._count_outcome(fix, attempts, successes, rid, row, now),
        )

    async def _take(
        self,
        kind: str,
        rid: bytes | None,
        now: int,
        data: list[Any],
        count: Callable[[bytes | None], object],
    ) -> None:
        """Journal a report, then ``count`` it, in the step that commits its row.

        A report that comes alone is committed at once, in its caller's task. The
        reports of a burst (one within ``BURST_S`` of the previous one, or while
        others wait) share one commit, as op writes do (node/writes.py): the
        journal's task (:meth:`_journal_task`) lets the burst join for as long as it
        grows, a few turns of the scheduler at most, then commits it."""
        if self.journal is None:
            count(None)
            return
        if self.journaled + len(self._taking) >= MAX_JOURNAL or len(self._ready) >= MAX_UNWRITTEN:
            raise Unavailable(BUSY)
        row: Row = (rid or os.urandom(16), rid is not None, kind, now, encoding.encode(data))
        slot = Taking(row, count)
        if rid is not None:
            self._pending_ids.add(rid)  # a re-send meanwhile is a duplicate
        t = trio.current_time()
        burst, self._last_take = t - self._last_take < BURST_S, t
        if not self._journal_running or not (burst or self._taking or self._committing):
            self._commit_taken([slot])
            self._last_take = trio.current_time()  # (a burst is measured from its end)
        else:
            self._taking.append(slot)
            if rid is not None:
                self._waiting[rid] = slot
            self._journal_wake.set()
            try:
                await slot.done.wait()
            except trio.Cancelled:
                if slot in self._taking:  # not committed: nothing was taken
                    self._taking.remove(slot)
                    self._finish(slot)  # (a re-send waiting for it is taken instead)
                raise
        if slot.error is not None:
            raise slot.error

    def _recount(self, kind: str, v: Any, rid: bytes | None, key: bytes, ts: int) -> None:
        if kind == "pattern.report":
            self._count_failure(Reduced(*v), rid, key, ts)
        elif kind == "fix.outcome":
            fix, attempts, successes = v
            self._count_outcome(fix, attempts, successes, rid, key, ts)
        else:
            raise ValueError(f"kind {kind!r}")

    def recover(self, rows: Sequence[Row]) -> int:
        """Count again the journal rows a node left (killed before their op committed);
        they are written with the next window. Returns the number of reports counted."""
        bad: list[bytes] = []
        for key, sdk, kind, ts, data in rows:
            rid = key if sdk else None
            if rid is not None and self.known(rid):  # (its op is committed: never, but)
                bad.append(key)
                continue
            try:
                self._recount(kind, encoding.decode(data), rid, key, ts)
            except (GossipmindError, TypeError, ValueError) as exc:
                log.warning("dropped a journal row that cannot be read: %s", exc)
                bad.append(key)
                continue
            self.journaled += 1
        if bad and self.journal is not None:
            self.journal((), bad)
        if len(rows) > len(bad):
            log.info("counted %d reports left in the journal", len(rows) - len(bad))
        return len(rows) - len(bad)

    def failure(self, failure: Failure, rid: bytes | None = None) -> Reduced:
        """Count a failure (the id ``rid`` of one taken already: not again), journaled
        first, in this call, when there is a journal (the in-process API): raises
        :class:`Unavailable`, nothing taken, when the journal is full or fails."""
        reduced = reduce(failure, self.rules)
        if rid is not None and self.seen(rid):
            self.duplicates += 1
            return reduced
        now = self._now()
        count = functools.partial(self._count_failure, reduced, rid, now=now)
        self._take_now("pattern.report", rid, now, failure_data(reduced), count)
        return reduced

    def _take_now(
        self, kind: str, rid: bytes | None, now: int, data: list[Any], count: Callable[..., object]
    ) -> None:
        """:meth:`_take` in one commit of its own, synchronously."""
        if self.journal is None:
            count(row=None)
            return
        if self.journaled + len(self._taking) >= MAX_JOURNAL or len(self._ready) >= MAX_UNWRITTEN:
            raise Unavailable(BUSY)
        row: Row = (rid or os.urandom(16), rid is not None, kind, now, encoding.encode(data))
        slot = Taking(row, lambda key: count(row=key))
        self._commit_taken([slot])
        if slot.error is not None:
            raise slot.error

    def _count_failure(
        self, reduced: Reduced, rid: bytes | None, row: bytes | None, now: int
    ) -> None:
        if not self.failures.add(reduced, now):
            # the window holds its cap of distinct patterns: close it now (its
            # bodies wait to be written) rather than drop an acknowledged report
            self._close_failures(force=True)
            self.failures.add(reduced, now)
            self._wake.set()
        self.local_counts[reduced.pattern] = self.local_counts.get(reduced.pattern, 0) + 1
        self._remember(reduced.pattern, rid, row)

    def outcome(self, fix: bytes, attempts: int, successes: int, rid: bytes | None = None) -> None:
        """Count an outcome (see :meth:`failure`: journaled first when there is a journal)."""
        if rid is not None and self.seen(rid):
            self.duplicates += 1
            return
        now = self._now()
        count = functools.partial(self._count_outcome, fix, attempts, successes, rid, now=now)
        self._take_now("fix.outcome", rid, now, [fix, attempts, successes], count)

    def _count_outcome(
        self,
        fix: bytes,
        attempts: int,
        successes: int,
        rid: bytes | None,
        row: bytes | None,
        now: int,
    ) -> None:
        o = self.outcomes.get(fix)
        if o is not None and o[0] + attempts > MAX_COUNTER:
            # one op's counters are bounded (schema): close this one, start another
            self._queue_outcome(fix, now)
            o = None
        if o is None:
            o = self.outcomes[fix] = [0, 0]
            self._outcome_spans[fix] = [now, now]
        o[0] += attempts
        o[1] += successes
        self._remember(fix, rid, row, failure=False)
        span = self._outcome_spans[fix]
        span[1] = max(span[1], now)

    def _queue_outcome(self, fix: bytes, now: int) -> None:
        attempts, successes = self.outcomes.pop(fix)
        first, last = self._outcome_spans.pop(fix)
        window = [first, last]
        body = {"fix": fix, "attempts": attempts, "successes": successes, "window": window}
        rows = self._outcome_rows.pop(fix, None)
        self._queue(("fix.outcome", body), self._outcome_ids.pop(fix, None), rows, now)
        self.outcome_hold.written(fix, now, first)

    def held(self) -> int:
        """Patterns and fixes whose reports a flush now would hold (not write yet)."""
        now, hold = self._now(), self.outcome_hold
        return self.failures.held(now) + sum(1 for f in self.outcomes if not hold.due(f, now))

    def _pressed(self) -> bool:
        """Whether held reports fill half of a bound: then they are written now."""
        return (
            self.journaled * PRESSURE >= MAX_JOURNAL
            or len(self._pending_ids) * PRESSURE >= MAX_PENDING_IDS
            or len(self._ready) * PRESSURE >= MAX_UNWRITTEN
        )

    def _close_failures(self, force: bool = False) -> None:
        now = self._now()
        for body in self.failures.flush(now, force=force or self._pressed()):
            p = body["pattern"]
            ids, rows = self._window_ids.pop(p, None), self._window_rows.pop(p, None)
            self._queue(("pattern.report", body), ids, rows, now)

    def _close_window(self, force: bool = False) -> None:
        """Move what is due (everything, with ``force``) into the queue of bodies to
        write; held reports stay batched (see the module's docstring)."""
        now = self._now()
        force = force or self._pressed()
        self._close_failures(force)
        hold = self.outcome_hold
        for fix in sorted(self.outcomes):
            if force or hold.due(fix, now):
                self._queue_outcome(fix, now)
        hold.forget_quiet(now)

    def _done(self, kind: str, body: dict[str, Any]) -> Ids:
        """A body left the queue (written or dropped): its failures are no longer unsent,
        and its report ids are the store's (committed with it) or forgotten. Returns
        its journal rows (deleted with its op, or to delete)."""
        rows: Ids = ()
        if self._closed.get(id(body), (None,))[0] is body:
            del self._closed[id(body)]
        entry = self._receipts.pop(id(body), None)
        if entry is not None and entry[0] is body:
            self._pending_ids.difference_update(entry[1])
            rows = entry[2]
            self.journaled -= len(rows)
        if kind == "pattern.report":
            left = self.local_counts.get(body["pattern"], 0) - int(body["count"])
            if left > 0:
                self.local_counts[body["pattern"]] = left
            else:
                self.local_counts.pop(body["pattern"], None)
        return rows

    def _dropped(self, kind: str, body: dict[str, Any], why: str) -> None:
        """A body that will never be written: count it, and its failures are no
        longer unsent. Logged (once per overflow, not once per body)."""
        self.dropped += 1
        rows = self._done(kind, body)
        # refused: never written, nor counted at a restart; beyond MAX_UNWRITTEN (the
        # store failing for long): out of memory, its rows stay, counted at the next start
        if rows and self.journal is not None and why != FULL:
            try:
                self.journal((), rows)
            except GossipmindError as exc:
                log.warning("could not forget %d journal rows: %s", len(rows), exc)
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
                flight = self._inflight = InFlight(self._ready.popleft())
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
        self._close_window(force=True)
        bodies = list(self._ready)
        self._ready.clear()
        if not bodies:
            return 0
        now = self._now()
        try:
            results = commit([(kind, body, self.stamp(body, now)) for kind, body in bodies])
        except GossipmindError as exc:
            log.warning("could not write %d reports while stopping: %s", len(bodies), exc)
            results = [exc] * len(bodies)
        written = 0
        for (kind, body), result in zip(bodies, results, strict=True):
            if isinstance(result, GossipmindError):  # (its rows stay: for the next start)
                self.dropped += 1
            else:
                written += 1
            self._done(kind, body)
        return written

    async def run(self) -> None:
        """Flush every window, or at once when a window fills up, forever (a failed
        write is logged and retried next window); and commit the journal's bursts."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._journal_task)
            await self._flush_every_window()

    async def _flush_every_window(self) -> None:
        while True:
            with trio.move_on_after(self.window_ms / 1000):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.flush()
            except GossipmindError as exc:
                log.warning("could not write reports (kept for the next window): %s", exc)
