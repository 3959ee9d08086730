"""The network side of a :class:`~gossipmind.node.node.Node`: gossip in, gap filling,
new connections, periodic anti-entropy, sync sessions in and out, and the
application-level partition (``block``, ``shut_out``).

Moved out of ``node.py`` (which keeps writing, ingesting, the agent's side and
``open_node``) so that both stay under the module size limit. :class:`Networking`
is a base class of ``Node``: its methods read and write the attributes
``Node.__init__`` sets, declared here for the type checker.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import trio

from gossipmind.core.errors import InvalidOp, NetworkError, StoreError
from gossipmind.core.ops import Op
from gossipmind.core.replica import IngestResult
from gossipmind.net.gossip import BatchValidator, GossipBatcher
from gossipmind.net.interface import SYNC_PROTOCOL, Stream, Transport
from gossipmind.node.addrbook import AddressBook
from gossipmind.node.config import NodeConfig
from gossipmind.node.foreign import ForeignPeers
from gossipmind.node.pacer import Pacer
from gossipmind.node.peering import Peering, peer_of
from gossipmind.node.syncer import SESSION_LIMIT, SyncCounters, SyncGuard, drive
from gossipmind.store.source import StoreSource
from gossipmind.store.sqlite import Store
from gossipmind.sync import messages as sync_messages
from gossipmind.sync.messages import Bye
from gossipmind.sync.session import Session

if TYPE_CHECKING:
    from gossipmind.node.node import NodeCounters

__all__ = ["BUSY_RETRIES", "GAP_GRACE", "SYNC_BACKOFF", "Networking", "periodic_round_due"]

log = logging.getLogger("gossipmind.node")
BUSY_RETRIES = 5  # a session refused as busy before the first completed one is retried
GAP_GRACE = 0.5  # seconds gossip gets to fill a causal gap before we sync for it
SYNC_BACKOFF = 4  # while gossip brings new ops, a periodic round runs every 4th interval


def periodic_round_due(skipped: int, gossip_flowing: bool) -> bool:
    """Whether a periodic anti-entropy round runs, after ``skipped`` rounds skipped
    in a row, gossip having brought new ops since the last decision or not."""
    return not gossip_flowing or skipped + 1 >= SYNC_BACKOFF


class Networking:
    """Gossip and anti-entropy with the node's peers (set up by ``Node.__init__``)."""

    config: NodeConfig
    store: Store
    transport: Transport
    validator: BatchValidator
    source: StoreSource
    batcher: GossipBatcher
    counters: NodeCounters
    sync: SyncCounters
    addrbook: AddressBook
    pacer: Pacer
    guard: SyncGuard
    blocked: set[str]
    foreign: ForeignPeers
    synced: trio.Event
    link_faults: tuple[float, float] | None
    peering: Peering
    _syncing: set[str]
    _gap_check: bool
    _session_lock: trio.Lock
    _nursery: trio.Nursery
    _rng: random.Random

    if TYPE_CHECKING:  # Node's (node.py)

        def ingest_ops(self, pairs: list[tuple[Op, bool]]) -> IngestResult: ...

        async def ingest_frame(self, raws: list[bytes]) -> IngestResult: ...

        def _stop_if_broken(self, exc: StoreError) -> None: ...

    # -- background tasks ------------------------------------------------------

    async def _gossip_in(self) -> None:
        async for peer, data in self.transport.messages():
            if peer in self.blocked:
                continue
            if self.link_faults is not None:  # application-level lossy, slow links (chaos)
                drop, delay = self.link_faults
                if self._rng.random() < drop:
                    self.counters.gossip_dropped += 1
                    continue
                if delay > 0:
                    await trio.sleep(self._rng.uniform(0, delay))
            try:
                pairs, carried = self.validator.decode(data, self.store.replica.known)
            except InvalidOp as exc:  # the validator accepted it, so this is a bug or a race
                log.warning("gossip from %s undecodable after validation: %s", peer, exc)
                continue
            self.counters.gossip_messages += 1
            self.counters.gossip_ops += carried
            now = trio.current_time()
            self.pacer.heard(peer, now)
            self.pacer.pace(now)
            try:
                result = self.ingest_ops(pairs)
            except StoreError as exc:
                if self.store.broken is None:
                    raise
                self._stop_if_broken(exc)
                return
            self.counters.gossip_applied += len(result.applied)
            if result.pending and not self._gap_check:  # a gap: fill it unless gossip does
                self._gap_check = True
                self._nursery.start_soon(self._fill_gap, peer)
            await trio.lowlevel.checkpoint()

    async def _fill_gap(self, origin: str) -> None:
        """Sync if ops still wait for missing deps after a grace period.

        Under load, batches from different publishers arrive out of causal order
        all the time and the next message fills the gap: syncing at once would
        fetch the same ops twice. The origin is often not a neighbour: then any
        neighbour will do (each holds what it forwarded).
        """
        try:
            await trio.sleep(max(GAP_GRACE, 2 * self.batcher.interval))
        finally:
            self._gap_check = False
        if not self.store.replica.pending.missing():
            return
        peers = self.transport.peers()
        if origin in peers:
            self.start_sync(origin)
        elif peers:
            self.start_sync(self._rng.choice(peers))

    async def _on_connections(self) -> None:
        async for peer in self.transport.connections():
            if self.shut_out(peer):
                await self.transport.disconnect(peer)
                continue
            for addr in self.transport.peer_addrs(peer):
                self.addrbook.remember(peer, addr)
            if self.transport.peer_id < peer:  # both ends see it; one session is enough
                self.start_sync(peer)

    async def _periodic_sync(self) -> None:
        """Anti-entropy with a random peer every ``sync_interval`` (jittered).

        While gossip keeps bringing new ops, only every ``SYNC_BACKOFF``-th round
        runs: under load a round mostly carries ops still in flight, which gossip
        delivers anyway (a quarter of all ops arrived twice, ~6 % of the CPU).
        Gossip loss is still repaired: a lost op leaves a gap its author's next op
        reveals (``_fill_gap`` syncs for it), and the last ops of a burst are
        fetched once gossip goes quiet, one interval later.
        """
        skipped, heard = 0, self.counters.gossip_applied
        while True:
            await trio.sleep(self.config.sync_interval * (0.5 + self._rng.random()))
            flowing = self.counters.gossip_applied > heard
            heard = self.counters.gossip_applied
            if not periodic_round_due(skipped, flowing):
                skipped += 1
                continue
            skipped = 0
            peers = self.transport.peers()
            if peers:
                self.start_sync(self._rng.choice(peers))

    # -- sync -----------------------------------------------------------------

    def start_sync(self, peer: str) -> None:
        """Start an anti-entropy session with ``peer`` unless one is running."""
        if peer in self._syncing or self.shut_out(peer):
            return
        if not self.guard.allowed(peer, trio.current_time()):
            return
        self._syncing.add(peer)
        self._nursery.start_soon(self._sync_out, peer)

    async def _sync_out(self, peer: str, retry: int = BUSY_RETRIES) -> None:
        busy = False
        try:
            async with self._session_lock:
                if not self.guard.allowed(peer, trio.current_time()):
                    return
                with trio.fail_after(self.config.sync_timeout):
                    stream = await self.transport.open_stream(peer, SYNC_PROTOCOL)
                busy = await self._session(stream, initiator=True) == "busy"
        except (NetworkError, trio.TooSlowError) as exc:
            log.debug("sync with %s not started: %s", peer, exc)
        finally:
            self._syncing.discard(peer)
        if busy and retry and not self.synced.is_set():  # the write gate waits: try again soon
            await trio.sleep(0.1 + 0.4 * self._rng.random())
            if peer not in self._syncing:
                self._syncing.add(peer)
                await self._sync_out(peer, retry - 1)

    async def _sync_in(self, stream: Stream) -> None:
        if self.shut_out(stream.remote_peer):
            await stream.reset()
            return
        if not self.guard.allowed(stream.remote_peer, trio.current_time()):
            self.sync.refused_penalized += 1  # it stalled or misbehaved lately: see SyncGuard
            await self._refuse(stream, "later")
            return
        if self._session_lock.locked():
            # Sessions with several peers at once would each send us the same missing
            # ops (a node back from downtime would download its gap once per peer).
            # Refuse; the peer's next round, or ours, will do. Never wait here: two
            # nodes syncing out to each other would then wait on each other.
            self.sync.refused += 1
            await self._refuse(stream, "busy")
            return
        async with self._session_lock:
            await self._session(stream, initiator=False)

    async def _refuse(self, stream: Stream, reason: str) -> None:
        frame = sync_messages.encode(Bye(reason))
        self.sync.frames_sent += 1
        self.sync.bytes_sent += len(frame)
        await stream.send(frame)

    def shut_out(self, peer: str) -> bool:
        """Whether ``peer`` is refused: partitioned off, or found on another network."""
        return peer in self.blocked or self.foreign.holds(peer, trio.current_time())

    async def block(self, peers: set[str]) -> None:
        """Partition: refuse and drop these peers (an empty set heals)."""
        lifted = self.blocked - set(peers)
        self.blocked = set(peers)
        if lifted:  # the cut healed: dial across it now, not at the next exploration
            self.peering.wake()
        for peer in self.transport.peers():
            if peer in self.blocked:
                await self.transport.disconnect(peer)

    async def _session(self, stream: Stream, *, initiator: bool) -> str | None:
        """Run one session; the reason the peer declined it (``busy``...), if it did."""
        peers, nonce = self.peering.share_addrs(), self._rng.randbytes(16)  # a new heads sample
        session = Session(self.source, initiator=initiator, peers=peers, nonce=nonce)
        timeout = self.config.sync_timeout
        try:
            why = await drive(
                stream,
                session,
                self.ingest_frame,
                self.sync,
                timeout=timeout,
                limit=SESSION_LIMIT * timeout,
            )
        except StoreError as exc:
            if self.store.broken is None:
                raise
            self._stop_if_broken(exc)
            return None
        self.guard.record(stream.remote_peer, why, trio.current_time())
        if session.declined == "wrong network":
            self.foreign.add(stream.remote_peer, trio.current_time())
            self._nursery.start_soon(self.transport.disconnect, stream.remote_peer)
        if not why:
            self.synced.set()
            assert session.peer is not None  # a completed session exchanged hellos
            for addr in session.peer.peers:  # only from peers that completed a session
                self.addrbook.remember(peer_of(addr), addr, teacher=stream.remote_peer)
            # the peer's listen addresses: known by now (identify), maybe not at connect
            for addr in self.transport.peer_addrs(stream.remote_peer):
                self.addrbook.remember(stream.remote_peer, addr)
        return session.declined
