"""A node: a store, a transport, gossip and anti-entropy, owned by one nursery.

``open_node(config)`` is an async context manager; leaving it stops every task
and closes the store. Everything that touches the store runs on the trio thread
(SQLite calls are short and batched; signature checks use the verify pool).
Its network side (gossip in, sync sessions, partition) is in its base class
:class:`~gossipmind.node.networking.Networking`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from gossipmind.core.errors import GossipmindError, StoreError
from gossipmind.core.identity import Identity
from gossipmind.core.ops import Op
from gossipmind.core.replica import IngestResult
from gossipmind.learn.patterns import Failure, Reduced
from gossipmind.net.fake import FakeNetwork
from gossipmind.net.gossip import BatchValidator, GossipBatcher, make_validator
from gossipmind.net.interface import SYNC_PROTOCOL, Transport, TransportConfig
from gossipmind.node.addrbook import AddressBook
from gossipmind.node.config import NodeConfig
from gossipmind.node.fixes import FixIndex, Transition
from gossipmind.node.foreign import ForeignPeers
from gossipmind.node.groups import unwrapped
from gossipmind.node.learner import Learner
from gossipmind.node.listeners import Listeners
from gossipmind.node.networking import (
    BUSY_RETRIES,
    GAP_GRACE,
    SYNC_BACKOFF,
    Networking,
    periodic_round_due,
)
from gossipmind.node.opening import open_off_loop
from gossipmind.node.pacer import Pacer
from gossipmind.node.peering import Peering
from gossipmind.node.reporter import Reporter
from gossipmind.node.reportstart import start_reports
from gossipmind.node.status import status_of
from gossipmind.node.syncer import PENALTY_CAP, SyncCounters, SyncGuard
from gossipmind.node.verifier import Verifier
from gossipmind.node.writes import GroupCommit, Request
from gossipmind.store.source import StoreSource
from gossipmind.store.sqlite import Store

__all__ = [
    "BUSY_RETRIES",
    "GAP_GRACE",
    "INGEST_STEP",
    "MAX_OPS_PER_INGEST",
    "SYNC_BACKOFF",
    "UNSYNCED_WRITE",
    "WRITE_GATE_S",
    "Node",
    "NodeCounters",
    "now_ms",
    "open_node",
    "periodic_round_due",
]

log = logging.getLogger("gossipmind.node")
MAX_OPS_PER_INGEST = 2000
INGEST_STEP = 256  # ops of a sync frame applied between two turns of the event loop
WRITE_GATE_S = 10.0  # how long a first write waits for the first sync
UNSYNCED_WRITE = "writing after %g s without a completed sync (no peer answered): a store \
restored from a backup may now sign a seq its key already used (equivocation, operations.md §9)"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class NodeCounters:
    gossip_messages: int = 0
    gossip_ops: int = 0
    gossip_applied: int = 0  # ops first applied here from gossip (new to this node)
    ops_applied: int = 0
    ops_rejected: int = 0
    ops_written: int = 0
    gossip_dropped: int = 0  # by application-level link faults (testnet chaos)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


class Node(Networking):
    def __init__(
        self,
        config: NodeConfig,
        store: Store,
        identity: Identity,
        transport: Transport,
        validator: BatchValidator,
        nursery: trio.Nursery,
    ) -> None:
        self.config = config
        self.store = store
        self.identity = identity
        self.transport = transport
        self.validator = validator
        self.net = store.replica.net
        self.source = StoreSource(store)
        self.batcher = GossipBatcher(transport.publish, interval=config.gossip_interval)
        self.counters = NodeCounters()
        self.sync = SyncCounters()
        self.addrbook = AddressBook(transport.peer_id)
        self._syncing: set[str] = set()
        self.pacer = Pacer(self.batcher, config.gossip_interval, config.gossip_budget)
        self._gap_check = False  # a _fill_gap task is waiting
        self._session_lock = trio.Lock()  # one sync session at a time: see _sync_in
        self.guard = SyncGuard(config.sync_timeout, PENALTY_CAP * config.sync_timeout)
        self.blocked: set[str] = set()  # application-level partition (testnet control)
        self.foreign = ForeignPeers()  # peers found on another network, kept off a while
        self.synced = trio.Event()  # one sync session completed since start
        self.link_faults: tuple[float, float] | None = None  # (drop probability, max delay s)
        self._nursery = nursery
        self._changed = trio.Event()
        self._listeners = Listeners[Op]("op listener")
        self._rng = random.Random()
        self.peering = Peering(self)
        self.reporter = Reporter(
            self._write_report,
            now_ms,
            window_ms=config.report_window_ms,
            journal=store.journal,
            hold_max_ms=config.report_hold_max_ms,
        )
        self.reporter.known = store.knows_report  # committed report ids (store/receipts.py)
        start_reports(self.reporter, store, identity.public, now_ms())  # journal, holds
        self.learner = Learner(
            store.replica,
            self.write,
            idle_s=config.idle_s,
            cpu_budget=config.cpu_budget,
            max_wait_s=config.learn_max_wait_s,
            me=identity.public,
            propose_wait_s=config.propose_wait_s,
        )
        self.fixes = FixIndex(store.replica)
        revoke = {
            "revoke_window_s": config.revoke_window_s,
            "revoke_confirm_s": config.revoke_confirm_s,
        }
        self.verifier = Verifier(store.replica, identity.public, self.write, **revoke)
        self._fix_listeners = Listeners[Transition]("fix-event listener")
        self._fixes_dirty = trio.Event()
        self._gate_done = False  # the first write's wait for a sync is over
        self._stopping = False  # a store write failed: the node is stopping
        self.writes = GroupCommit(self._commit_writes, self._written)

    # -- writing and ingesting ------------------------------------------------

    async def write(self, kind: str, body: dict[str, Any], ts: int | None = None) -> Op:
        """Author an op, persist it (acknowledged), then gossip it. Writes that come
        in a burst share one commit; a lone one commits at once
        (:class:`~gossipmind.node.writes.GroupCommit`).

        The first write of a node that has peers to ask first waits for one
        completed sync (at most ``WRITE_GATE_S``; later writes never wait): a
        store restored from an old backup would otherwise sign a seq its key
        already used — an equivocation that voids the whole key.
        """
        await self._write_gate()
        return await self.writes.submit((kind, body, now_ms() if ts is None else ts))

    async def _write_report(self, kind: str, body: dict[str, Any]) -> Op:
        """The reporter's writes, told when durable, before gossip (``Reporter.durable``)."""
        await self._write_gate()
        ts = self.reporter.stamp(body, now_ms())  # (when its window was closed: hold.py)
        return await self.writes.submit((kind, body, ts), self.reporter.durable)

    async def _write_gate(self) -> None:
        if not self._gate_done and self._has_peers_to_ask():
            with trio.move_on_after(WRITE_GATE_S):
                await self.synced.wait()
            self._gate_done = True  # waited once: later writes never wait again
            if not self.synced.is_set():
                log.warning(UNSYNCED_WRITE, WRITE_GATE_S)

    def _has_peers_to_ask(self) -> bool:
        return bool(self.config.bootstrap or self.transport.peers())

    def _past_gate(self) -> bool:
        return self._gate_done or self.synced.is_set() or not self._has_peers_to_ask()

    def _commit_writes(self, requests: Sequence[Request]) -> list[Op | GossipmindError]:
        """Author and persist a group of concurrent writes (see node/writes.py)."""
        self._check_own_seq()
        try:
            return self.store.create_ops(self.identity, requests, *self.reporter.receipts(requests))
        except StoreError as exc:
            self._stop_if_broken(exc)
            raise

    def _write_unsent(self) -> None:
        """Write what the reporter holds, synchronously, once the node's tasks have
        stopped (no flush has a body in flight). A write that breaks the store raises."""
        broken = self.store.broken
        self._stopping = True  # there is no node left to stop
        self.reporter.flush_into(self._commit_writes)
        if broken is None and self.store.broken is not None:
            raise StoreError(f"the store failed a write while stopping: {self.store.broken}")

    def _stop_if_broken(self, exc: StoreError) -> None:
        """A write to the store failed: stop the node, with that error.

        Its replica may now hold ops the store lacks, and the store refuses every
        further write; a node that went on would accept gossip and sync it cannot
        keep. Stopping makes the failure loud (``open_node`` raises it, the daemon
        exits 5) and the next start reopens the store as it is on disk.
        """
        if self.store.broken is None or self._stopping:
            return
        self._stopping = True
        log.error("the store failed a write; stopping the node: %s", exc)

        async def stop() -> None:
            raise exc

        self._nursery.start_soon(stop)

    async def _written(self, ops: list[Op]) -> None:
        """Ops just written and durable: announce them, then gossip them in order."""
        self.counters.ops_written += len(ops)
        self.pacer.pace(trio.current_time())
        self._applied(ops)
        for op in ops:
            await self.batcher.put(op.raw)

    def _check_own_seq(self) -> None:
        """Refuse to sign if the network holds newer ops of our key than the store."""
        r = self.store.replica
        me = self.identity.public
        nxt = r.last_seq.get(me, 0) + 1
        newer = [seq for seq in r.pending.seqs_of(me) if seq >= nxt]
        if newer:
            raise StoreError(
                f"this key already signed seq {max(newer)} but the store knows only {nxt - 1} "
                "(restored from an old backup?): writes wait until sync brings the missing ops"
            )

    def ingest_raw(self, raws: list[bytes]) -> IngestResult:
        result = IngestResult()
        for start in range(0, len(raws), MAX_OPS_PER_INGEST):
            result.extend(self.store.ingest_raw(raws[start : start + MAX_OPS_PER_INGEST]))
        self._account(result)
        return result

    async def ingest_frame(self, raws: list[bytes]) -> IngestResult:
        """Sync's ingest of a received frame: in steps of :data:`INGEST_STEP` ops,
        each durable (and counted) before the next, the next step's signatures
        verified on other threads meanwhile. The event loop waits for no
        signature and runs other tasks between steps: a frame of ~1 200 ops no
        longer holds it for a tenth of a second or more."""
        steps = [raws[i : i + INGEST_STEP] for i in range(0, len(raws), INGEST_STEP)]
        result = IngestResult()
        staged = self.store.stage(steps[0]) if steps else None
        for k in range(len(steps)):
            assert staged is not None
            if not staged[1].ready():
                await trio.to_thread.run_sync(staged[1].result)
            following = self.store.stage(steps[k + 1]) if k + 1 < len(steps) else None
            applied = self.store.apply_staged(staged)
            self._account(applied)
            result.extend(applied)
            staged = following
            if following is not None:
                await trio.lowlevel.checkpoint()
        return result

    def ingest_ops(self, pairs: list[tuple[Op, bool]]) -> IngestResult:
        result = IngestResult()
        checked = [op for op, ok in pairs if ok]
        unchecked = [op for op, ok in pairs if not ok]
        if checked:
            result.extend(self.store.ingest(checked, verified=True))
        if unchecked:
            result.extend(self.store.ingest(unchecked))
        self._account(result)
        return result

    def _account(self, result: IngestResult) -> None:
        self.counters.ops_rejected += len(result.rejected)
        for _, code, _ in result.rejected:
            by = self.counters.rejected_by_reason
            by[code] = by.get(code, 0) + 1
        if result.applied:
            self._applied(result.applied)

    def _applied(self, ops: list[Op]) -> None:
        self.counters.ops_applied += len(ops)
        for op in ops:  # signed by us or verified on ingest: gossip needs no second check
            self.validator.mark_verified(op.id)
        self._changed.set()
        self._changed = trio.Event()
        self.fixes.note(ops)
        if self.fixes.dirty:
            self._fixes_dirty.set()
        self.verifier.note(ops)  # its next pass reads only the fixes these can change
        self._listeners.send(ops)

    # -- the agent's side -------------------------------------------------------

    def touch(self) -> None:
        """The agent is active: sleep-time learning yields."""
        self.learner.activity()

    def report_failure(self, failure: Failure, rid: bytes | None = None) -> Reduced:
        """Reduce a failure to its pattern now, and journal it before returning (a
        crash before its op is written loses nothing: node/reporter.py); it is
        written with its pattern's next batch. Raises Unavailable, nothing taken,
        when the journal is full or fails."""
        self.touch()
        return self.reporter.failure(failure, rid)  # (rid: the SDK's id of the report)

    def report_outcome(
        self, fix: bytes, attempts: int, successes: int, rid: bytes | None = None
    ) -> None:
        self.touch()
        self.reporter.outcome(fix, attempts, successes, rid)

    def fix_events(self, buffer: int = 1000) -> trio.MemoryReceiveChannel[Transition]:
        """A channel of fix status transitions (accepted, revoked, …) from now on;
        close it when done. Raises TooManyListeners when MAX_LISTENERS are open."""
        return self._fix_listeners.add(buffer)

    async def _track_fixes(self) -> None:
        """Report fix status transitions (log, :meth:`fix_events`) as ops apply."""
        while True:
            await self._fixes_dirty.wait()
            self._fixes_dirty = trio.Event()
            transitions = self.fixes.drain()
            for t in transitions:
                log.info("fix %s: %s -> %s", t.fix.hex()[:12], t.old, t.new)
            self._fix_listeners.send(transitions)

    def subscribe(self, buffer: int = 10_000) -> trio.MemoryReceiveChannel[Op]:
        """A channel of every op applied from now on (writes, gossip and sync).

        A subscriber that falls ``buffer`` ops behind is dropped: its channel
        ends (``EndOfChannel``) rather than the node blocking or buffering
        without bound. Close it when done; raises TooManyListeners when
        MAX_LISTENERS are open.
        """
        return self._listeners.add(buffer)

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def status(self, *, root: bool = True) -> dict[str, Any]:
        """Counters and state (node/status.py)."""
        return status_of(self, root=root)


@asynccontextmanager
async def open_node(
    config: NodeConfig, *, fake: FakeNetwork | None = None, identity: Identity | None = None
) -> AsyncIterator[Node]:
    """Run a node for the duration of the block (``fake``: on an in-memory network)."""
    ident, store, seqno_start = await open_off_loop(config, identity)
    try:
        validator = make_validator(store.replica.net)
        topic = f"gossipmind/{store.replica.net.hex()}/ops/1"
        cm: AbstractAsyncContextManager[Transport]
        if fake is not None:
            cm = fake.open_transport(validator, peer_id=ident.public.hex()[:16])
        else:
            from gossipmind.net.host import open_libp2p_transport

            tc = TransportConfig(
                seed=ident.seed,
                topic=topic,
                listen=config.listen,
                announce=config.announce,
                debug=config.debug_libp2p,
                seqno_start=seqno_start,
            )
            cm = open_libp2p_transport(tc, validator)
        # The node's tasks live inside the transport, and only they are cancelled
        # when the block ends: a transport torn down inside a cancelled scope loses
        # the exception (or return) crossing it to a Cancelled from its teardown.
        node: Node | None = None
        past_gate = False
        async with unwrapped(), cm as transport:
            try:
                async with trio.open_nursery() as nursery:
                    node = Node(config, store, ident, transport, validator, nursery)
                    transport.set_stream_handler(SYNC_PROTOCOL, node._sync_in)
                    await nursery.start(node.batcher.run)
                    await nursery.start(node.writes.run)
                    nursery.start_soon(node._gossip_in)
                    nursery.start_soon(node._on_connections)
                    nursery.start_soon(node._periodic_sync)
                    nursery.start_soon(node.peering.maintain)
                    nursery.start_soon(node.peering.explore)
                    nursery.start_soon(node._track_fixes)
                    nursery.start_soon(node.reporter.run)
                    if config.learn:
                        nursery.start_soon(node.learner.run)
                    if config.verifier:
                        nursery.start_soon(node.verifier.run)
                    try:
                        yield node
                    finally:
                        past_gate = node._past_gate()
                        nursery.cancel_scope.cancel()
            finally:  # past the gate, reports the agent was told were accepted are written
                if node is not None and past_gate:  # (no task writes any more)
                    node._write_unsent()
    finally:
        store.close()
