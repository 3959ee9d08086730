"""Group commit: the writes that arrive together share one SQLite transaction.

A write is durable before it is acknowledged, and a commit costs more than the
op it commits (about 70 µs against 50 µs to author the op: docs/performance.md).
So :class:`GroupCommit` queues the writes of concurrent callers and one task
commits everything queued in one transaction, in arrival order: ten concurrent
agents' writes cost one commit, not ten. Grouping costs a write one turn of the
scheduler, which on a busy node can be milliseconds (the convergence bench's p99
grew by ~8 ms), so only writes in a burst pay it: a write that comes more than
:data:`BURST_S` after the previous one, with nobody writing, is committed at once
in its caller's task. No write ever waits for a timer.

Each request succeeds or fails alone: an invalid op, or a body that cannot be
encoded, is refused (changing nothing) without failing the others of its group.
Only a failure of the store itself fails a whole group. A caller cancelled before its
request was taken loses nothing and writes nothing; one cancelled after may
still have its op applied, like a client that gave up on an answer in flight.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from gossipmind.core.errors import GossipmindError, StoreError
from gossipmind.core.ops import Op

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger("gossipmind.node")
MAX_GROUP = 256  # ops per transaction
BURST_S = 0.002  # a write this soon after the previous one waits to join a group
Request = tuple[str, dict[str, Any], int]  # kind, body, ts
Commit = Callable[[Sequence[Request]], Sequence[Op | GossipmindError]]
After = Callable[[list[Op]], Awaitable[None]]


@dataclass(eq=False)
class _Slot:
    request: Request
    durable: Callable[[], None] | None = None  # called once its op is committed
    done: trio.Event = field(default_factory=trio.Event)
    result: Op | GossipmindError | None = None


@dataclass
class GroupStats:
    """Transactions that committed writes, the ops they committed, and the most
    writes one transaction carried (``ops / groups`` near 1: writes come alone)."""

    groups: int = 0
    ops: int = 0
    largest: int = 0


class GroupCommit:
    """``await submit(request) -> Op``; run :meth:`run` in the owner's nursery.

    ``commit`` (synchronous) authors and persists a group, giving each request its
    Op or its error; ``after`` (async) runs on the ops of a group once they are
    durable, before their callers resume — the node hands them to gossip there,
    so a full gossip queue slows the writers down.
    """

    def __init__(self, commit: Commit, after: After, *, max_group: int = MAX_GROUP) -> None:
        if max_group < 1:
            raise ValueError("max_group must be positive")
        self._commit = commit
        self._after = after
        self._max = max_group
        self._queue: list[_Slot] = []
        self._wake = trio.Event()
        self._running = False
        self._stopped = False
        self._committing = False  # a group is being committed or handed to ``after``
        self._last_submit = -math.inf
        self.stats = GroupStats()

    async def submit(self, request: Request, durable: Callable[[], None] | None = None) -> Op:
        """Write ``request``; ``durable`` is called the moment its op is committed,
        before ``after`` (which may wait) and before this returns."""
        if self._stopped or not self._running:
            raise StoreError("the node is not running: nothing was written")
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller writes nothing
        slot = _Slot(request, durable)
        now = trio.current_time()
        burst = now - self._last_submit < BURST_S
        self._last_submit = now
        if not (burst or self._queue or self._committing):
            # a lone write: commit it in the caller's task rather than wait for the
            # committer's turn, which on a busy node can be milliseconds away
            await self._one([slot])
        else:
            self._queue.append(slot)
            self._wake.set()
            try:
                await slot.done.wait()
            except trio.Cancelled:
                if slot in self._queue:  # not taken yet: it is never written
                    self._queue.remove(slot)
                raise
        if isinstance(slot.result, Op):
            return slot.result
        assert slot.result is not None
        raise slot.result

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._running = True
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._queue and not self._committing:  # else that writer wakes us
                    group, self._queue = self._queue[: self._max], self._queue[self._max :]
                    await self._one(group)
        finally:
            self._stopped = True
            for slot in self._queue:
                slot.result = StoreError("the node stopped before this write: nothing was written")
                slot.done.set()
            self._queue.clear()

    async def _one(self, group: list[_Slot]) -> None:
        results: list[Op | GossipmindError] = [
            StoreError("the write failed before it was committed: nothing was written")
            for _ in group
        ]
        self._committing = True
        try:
            try:
                results = list(self._commit([s.request for s in group]))
            except GossipmindError as exc:  # the store failed: nothing of the group is durable
                results = [_copy(exc) for _ in group]
            except Exception as exc:  # a bug, before anything was applied (else the
                # store raised StoreError and is broken): fail the group, keep the node
                log.exception("a group of %d writes failed", len(group))
                why = f"the write failed ({type(exc).__name__}: {exc}): nothing was written"
                results = [_copy(StoreError(why)) for _ in group]
            ops = [r for r in results if isinstance(r, Op)]
            for slot, result in zip(group, results, strict=True):
                if slot.durable is not None and isinstance(result, Op):
                    slot.durable()
            self.stats.groups += bool(ops)  # a transaction only if it committed an op
            self.stats.ops += len(ops)
            self.stats.largest = max(self.stats.largest, len(group))
            if ops:
                await self._after(ops)
        finally:
            self._committing = False
            for slot, result in zip(group, results, strict=True):
                slot.result = result
                slot.done.set()
            if self._queue:  # writes that arrived meanwhile: the committer's turn
                self._wake.set()


def _copy(exc: GossipmindError) -> StoreError:
    """One error per caller (an exception object is raised once), same message."""
    out = StoreError(str(exc))
    out.__cause__ = exc
    return out
