"""The reporter's journal side (node/reporter.py): reports taken and waiting for
their journal row's commit, the task that commits a burst of them in one
transaction, and the ids of the reports taken and not written yet.

:class:`ReportJournal` is the base of :class:`gossipmind.node.reporter.Reporter`;
it owns the state these share. Which report is taken, and when a burst is
gathered, is the reporter's (``Reporter._take``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import trio

from gossipmind.core.errors import GossipmindError, Unavailable
from gossipmind.node.reportparts import Taking
from gossipmind.node.writes import MAX_GROUP
from gossipmind.store.journal import Row

log = logging.getLogger("gossipmind.node.reporter")

GATHER_TURNS = 8  # turns of the scheduler a burst of reports may take to gather, at most
BUSY = "the node holds as many reports not written yet as it may: send it again later"
Journal = Callable[[Sequence[Row], Sequence[bytes]], None]  # add rows, drop ids: one commit


class ReportJournal:
    """Reports taken: journaled (one commit per burst), then counted."""

    def __init__(self, journal: Journal | None) -> None:
        self.journal = journal  # (None: reports are taken in memory only)
        self.known: Callable[[bytes], bool] = lambda rid: False  # committed (the store's)
        self._pending_ids: set[bytes] = set()  # taken, not committed yet
        self.journaled = 0  # journal rows not written yet (at most MAX_JOURNAL)
        self._taking: list[Taking] = []  # reports waiting for their row's commit
        self._waiting: dict[bytes, Taking] = {}  # their ids (a re-send waits for it)
        self._committing = False  # the journal's task gathers or commits ``_taking``
        self._journal_running = False
        self._journal_wake = trio.Event()
        self._last_take = -float("inf")
        self.duplicates = 0  # reports whose id was taken already: not counted again
        self.takes = 0  # journal commits of reports taken (a burst shares one)

    def seen(self, rid: bytes) -> bool:
        """Whether the report with id ``rid`` was taken already (written or not)."""
        return rid in self._pending_ids or self.known(rid)

    async def _taken(self, rid: bytes) -> bool:
        """Whether the report with id ``rid`` was taken already. A re-send that comes
        while the first waits for its row's commit is answered with it, once that
        commit is over: as taken, or refused (:class:`Unavailable`) if it failed.
        If the first was cancelled (its client gone), this one is taken instead."""
        for _ in range(GATHER_TURNS):
            slot = self._waiting.get(rid)
            if slot is None:
                return self.seen(rid)
            await slot.done.wait()
            if slot.error is not None:
                raise Unavailable(str(slot.error))
            if slot.taken:
                return True
        raise Unavailable(BUSY)  # (cancelled again and again: the SDK sends it again)

    def _finish(self, slot: Taking, error: GossipmindError | None = None) -> None:
        """The row of ``slot`` was committed (``error`` None and taken), or not."""
        slot.error = error
        rid = slot.row[0] if slot.row[1] else None
        if rid is not None and self._waiting.get(rid) is slot:
            del self._waiting[rid]
        if rid is not None and not slot.taken:
            self._pending_ids.discard(rid)
        slot.done.set()

    async def _journal_task(self) -> None:
        """Commit the journal rows of the reports that came in a burst, forever."""
        self._journal_running = True
        try:
            while True:
                await self._journal_wake.wait()
                self._journal_wake = trio.Event()
                self._committing = True
                try:
                    for _ in range(GATHER_TURNS):  # while the burst grows, let it join
                        n = len(self._taking)
                        await trio.lowlevel.checkpoint()
                        if len(self._taking) in (n, 0) or len(self._taking) >= MAX_GROUP:
                            break
                    while self._taking:
                        group, self._taking = self._taking[:MAX_GROUP], self._taking[MAX_GROUP:]
                        self._commit_taken(group)
                finally:
                    self._committing = False
        finally:
            self._journal_running = False
            for slot in self._taking:  # the node stops: these were not taken
                self._finish(slot, Unavailable("the node is stopping: the report was not taken"))
            self._taking.clear()

    def _commit_taken(self, group: list[Taking]) -> None:
        assert self.journal is not None
        self.takes += 1
        try:
            self.journal([s.row for s in group], ())
        except GossipmindError as exc:
            log.warning("could not journal %d reports (refused, 503): %s", len(group), exc)
            for s in group:
                self._finish(s, Unavailable(f"the report could not be journaled: {exc}"))
            return
        self.journaled += len(group)
        for s in group:
            s.count(s.row[0])
            s.taken = True
            self._finish(s)
