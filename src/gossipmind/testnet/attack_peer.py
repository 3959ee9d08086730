"""The hostile peer: a libp2p host that joins a running testnet to attack it.

It knows what anyone holding the run dir knows: the genesis, the nodes'
addresses, and the data dirs of the *spare* members (granted, never started):
their keys stand for compromised members. It holds a mirror of the knowledge
base (a store in a temporary directory, filled by the sync protocol like any
peer's), so it can sign ops on top of the real heads.

Everything goes through :mod:`gossipmind.net`: the transport's validator accepts
everything (our own junk must leave), its frame and message limits are raised
so it can send what honest peers refuse to, and
:meth:`~gossipmind.net.streams.Libp2pStream.send_unframed` writes bytes without
a frame header.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from gossipmind.core import ops as opsmod
from gossipmind.core.errors import ConfigError, NetworkError
from gossipmind.core.identity import Identity
from gossipmind.core.ops import MAX_DEPS, Op
from gossipmind.net.gossip import MAX_BATCH_OPS, encode_batch
from gossipmind.net.interface import (
    MAX_FRAME_SIZE,
    MAX_GOSSIP_MESSAGE,
    SYNC_PROTOCOL,
    Stream,
    Transport,
    TransportConfig,
)
from gossipmind.node.syncer import SyncCounters, drive
from gossipmind.store.datadir import DataDir, load_genesis
from gossipmind.store.keyfile import read_key
from gossipmind.store.source import StoreSource
from gossipmind.store.sqlite import Store
from gossipmind.sync.session import Session
from gossipmind.testnet.attack_probe import view
from gossipmind.testnet.launcher import Testnet
from gossipmind.testnet.state import NodeEntry

log = logging.getLogger("gossipmind.testnet.attack")

T = TypeVar("T")

BATCH_BYTES = MAX_GOSSIP_MESSAGE - 4096  # what honest batches stay under, with room
HOSTILE_FRAME_LIMIT = 4 * MAX_FRAME_SIZE  # we may send frames honest peers refuse
HOSTILE_MESSAGE_LIMIT = 900 * 1024  # gossip messages over the 256 KiB limit (under 1 MiB RPCs)
DEAD_ADDR = "/ip4/127.0.0.1/tcp/9"  # discard: nothing listens there on a test machine
WARM_UP_TIMEOUT = 15.0
MIRROR_TIMEOUT = 30.0


def now_ms() -> int:
    return int(time.time() * 1000)


class Hostile:
    """A connected hostile peer; obtain one from :func:`open_hostile`."""

    def __init__(
        self, tn: Testnet, store: Store, transport: Transport, targets: list[NodeEntry]
    ) -> None:
        self.tn = tn
        self.store = store
        self.transport = transport
        self.targets = targets
        self.net = store.replica.net
        self.published = 0  # gossip messages
        self.published_bytes = 0

    @property
    def target(self) -> NodeEntry:
        return self.targets[0]

    async def ask(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking probe (HTTP, SQLite, /proc) without stalling the peer."""
        return await trio.to_thread.run_sync(fn, *args)

    async def busy_refusals(self) -> int:
        """Sync sessions the target refused because it ran another (from any peer)."""
        return int((await self.ask(view, self.tn, self.target.name)).sync.get("refused", 0))

    # -- connections and the mirror ----------------------------------------------------

    async def connect(self) -> None:
        """(Re)connect to every target we are not connected to, and drop anyone else
        (the targets tell their peers our address, and they may dial us)."""
        wanted = {t.peer_id for t in self.targets}
        for peer in self.transport.peers():
            if peer not in wanted:
                await self.transport.disconnect(peer)
        for t in self.targets:
            if t.peer_id not in self.transport.peers():
                await self.transport.connect(t.addr)

    async def warm_up(self) -> None:
        """Wait until the target hears our gossip (gossipsub grafts on its heartbeat).

        Publishes an empty batch (rejected as ``empty``, a reason no attack uses)
        until the target's validator counts one.
        """
        name = self.target.name
        seen = (await self.ask(view, self.tn, name)).gossip_rejected.get("empty", 0)
        deadline = trio.current_time() + WARM_UP_TIMEOUT
        while trio.current_time() < deadline:
            await self.connect()
            await self.transport.publish(encode_batch([]))
            await trio.sleep(0.3)
            if (await self.ask(view, self.tn, name)).gossip_rejected.get("empty", 0) > seen:
                await trio.sleep(0.5)  # let probes still in flight be counted now
                return
        raise NetworkError(f"{name} does not hear our gossip after {WARM_UP_TIMEOUT:.0f} s")

    async def refresh(self) -> int:
        """Pull what the target holds into the mirror (the sync protocol); ops received."""
        counters = SyncCounters()
        deadline = trio.current_time() + MIRROR_TIMEOUT
        while trio.current_time() < deadline:
            await self.connect()
            try:
                stream = await self.transport.open_stream(self.target.peer_id, SYNC_PROTOCOL)
            except NetworkError as exc:
                log.debug("mirror sync not started: %s", exc)
                await trio.sleep(0.5)
                continue
            session = Session(StoreSource(self.store), initiator=True, nonce=os.urandom(16))
            await drive(stream, session, self.store.ingest_raw, counters, timeout=10)
            peer = session.peer
            if peer is not None and peer.root == self.store.replica.root():
                return counters.ops_received
            await trio.sleep(0.3)  # "busy": the target ran another session
        raise NetworkError(f"could not mirror {self.target.name} in {MIRROR_TIMEOUT:.0f} s")

    # -- identities ---------------------------------------------------------------------

    def compromised(self) -> tuple[str, Identity]:
        """The key of a spare member that has signed nothing yet and is not revoked."""
        r = self.store.replica
        for n in self.tn.state().nodes:
            if not n.spare:
                continue
            key = bytes.fromhex(n.key)
            roles = r.roles(key)
            if r.last_seq.get(key, 0) or roles.revoked or key in r.membership.equivocators:
                continue
            if "member" not in roles.roles:
                continue
            return n.name, read_key(DataDir(Path(n.dir)).key)
        raise ConfigError(
            "this attack needs an unused spare member's key (a compromised member): "
            "start the testnet with more `--spares`"
        )

    # -- ops ----------------------------------------------------------------------------

    def forge(
        self,
        ident: Identity,
        kind: str,
        body: dict[str, Any],
        *,
        seq: int | None = None,
        deps: list[bytes] | None = None,
        lamport: int | None = None,
        net: bytes | None = None,
    ) -> Op:
        """Sign an op on top of the mirror's heads without checking or applying it."""
        r = self.store.replica
        author = ident.public
        seq = r.last_seq.get(author, 0) + 1 if seq is None else seq
        if deps is None:
            own = r.ops_at(author, seq - 1)
            others = sorted(h for h in r.heads if r.meta[h].author != author)
            picked = [max(own)] if own else []
            deps = picked + others[-(MAX_DEPS - len(picked)) :]
        if lamport is None:
            lamport = 1 + max((r.meta[d].lamport for d in deps if d in r.meta), default=0)
        return opsmod.create(
            ident,
            net=self.net if net is None else net,
            kind=kind,
            seq=seq,
            lamport=lamport,
            deps=deps,
            ts=now_ms(),
            body=body,
        )

    def write(self, ident: Identity, kind: str, body: dict[str, Any]) -> Op:
        """A *valid* op by ``ident`` on the mirror's heads, applied to the mirror."""
        return self.store.create_op(ident, kind, body, now_ms())

    # -- sending --------------------------------------------------------------------

    async def publish(self, data: bytes) -> None:
        await self.transport.publish(data)
        self.published += 1
        self.published_bytes += len(data)

    async def publish_ops(self, raws: list[bytes], *, max_bytes: int = BATCH_BYTES) -> int:
        """Gossip ops in batches an honest validator would accept the shape of."""
        sent = 0
        for batch in batches(raws, max_bytes):
            await self.publish(encode_batch(batch))
            sent += 1
        return sent

    async def open_sync(self, target: NodeEntry | None = None) -> Stream:
        t = target or self.target
        await self.connect()
        return await self.transport.open_stream(t.peer_id, SYNC_PROTOCOL)


def batches(raws: list[bytes], max_bytes: int = BATCH_BYTES) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    batch: list[bytes] = []
    size = 5
    for raw in raws:
        cost = len(raw) + 5
        if batch and (size + cost > max_bytes or len(batch) >= MAX_BATCH_OPS):
            out.append(batch)
            batch, size = [], 5
        batch.append(raw)
        size += cost
    if batch:
        out.append(batch)
    return out


async def _drain(transport: Transport) -> None:
    """Read (and drop) the honest gossip we receive, so nothing backs up."""
    async for _ in transport.messages():
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def open_hostile(tn: Testnet, targets: list[str]) -> AsyncIterator[Hostile]:
    """Join the testnet as a hostile peer connected to ``targets`` (node names)."""
    from gossipmind.net.host import open_libp2p_transport  # libp2p: only when attacking

    st = tn.state()
    entries = [st.node(t) for t in targets]
    genesis = load_genesis(tn.run_dir / "genesis.json")
    config = TransportConfig(
        seed=os.urandom(32),
        topic=f"gossipmind/{genesis.id.hex()}/ops/1",
        # The targets tell their peers where we are (identify, peer exchange): announce
        # a port nobody listens on, so nobody else dials in, and keep a spare slot.
        announce=(DEAD_ADDR,),
        max_connections=len(entries) + 1,
        max_frame_size=HOSTILE_FRAME_LIMIT,
        max_message_size=HOSTILE_MESSAGE_LIMIT,
    )
    with tempfile.TemporaryDirectory(prefix="gossipmind-hostile-") as tmp:
        store = Store.create(Path(tmp) / "kb.sqlite3", genesis, synchronous="OFF")
        try:
            async with (
                open_libp2p_transport(config, lambda _data: True) as transport,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_drain, transport)
                hostile = Hostile(tn, store, transport, entries)
                try:
                    await hostile.connect()
                    await hostile.refresh()
                    await hostile.warm_up()
                    yield hostile
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            store.close()


# -- what an attack reports ---------------------------------------------------------


@dataclass
class Expect:
    """A counter an attack should move on the honest nodes: where to look and how far.

    ``where``: ``gossip`` (the validator's rejections by reason), ``ingest``
    (ops rejected at ingest, by reason), ``sync`` (a sync counter, e.g.
    ``refused_penalized``), ``sync_failed`` (sync failures by reason),
    ``sync_guarded`` (failures for any of ``a|b`` plus sessions refused because
    the peer was penalized for an earlier one), ``pending`` (ops parked or
    evicted from the pending buffer). ``nodes``: ``target``
    (only the node we talk to: what it rejects goes nowhere) or ``all`` (the ops
    passed the validator and travel by gossip, so every node must judge them).
    """

    where: str
    reason: str
    count: int
    nodes: str = "target"

    def key(self) -> str:
        return f"{self.where}:{self.reason}"


@dataclass
class Sent:
    """What the hostile peer did."""

    ops: int = 0
    messages: int = 0  # gossip messages
    frames: int = 0  # sync frames or streams
    bytes: int = 0
    seconds: float = 0.0
    expect: list[Expect] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    # evaluated once every node converged: name -> finding (see attack.Result.checks)
    check: Callable[[Testnet, list[str]], dict[str, Any]] | None = None
