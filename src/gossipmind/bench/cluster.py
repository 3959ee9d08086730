"""Many real nodes in one trio run on 127.0.0.1, and the same topology without gossipmind.

Shared by the network benchmarks (convergence, catchup, throughput):

* :func:`ring_edges` — the topology: node ``i`` dials ``i+1 … i+k`` (mod N), a
  circulant graph of degree ``2k`` (complete when N is small), so every node sits
  inside the gossipsub mesh bounds and no node is a bottleneck;
* :func:`open_cluster` — ``N`` nodes (real libp2p, real SQLite stores prepared by
  :func:`gossipmind.testnet.setup.prepare`) connected along those edges, with the
  gossip mesh formed before it returns;
* :func:`open_raw_fleet` — bare libp2p transports (no validation, no store) joined
  along the *same* edges: the raw-gossipsub baseline;
* :class:`Arrivals` — when each op was applied on each node (``Node.subscribe``);
* :class:`Outcome` — a measurement's result or error, carried out of the nodes'
  contexts and returned or raised once they are closed.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

from gossipmind.core.errors import NetworkError
from gossipmind.core.ops import Op
from gossipmind.net.interface import TransportConfig
from gossipmind.net.mesh import mesh_peers
from gossipmind.node.config import NodeConfig
from gossipmind.node.heap import settle_heap, unsettle_heap
from gossipmind.node.node import Node, open_node
from gossipmind.testnet.setup import prepare

if TYPE_CHECKING:
    from gossipmind.net.host import Libp2pTransport

MESH_TIMEOUT = 30.0
T = TypeVar("T")
Edge = tuple[int, int]


def ring_edges(n: int, k: int = 2) -> list[Edge]:
    """Node ``i`` dials ``i+1 … i+k`` (mod ``n``); each undirected edge once."""
    edges: set[Edge] = set()
    for i in range(n):
        for d in range(1, min(k, n - 1) + 1):
            j = (i + d) % n
            if (j, i) not in edges and i != j:
                edges.add((i, j))
    return sorted(edges)


def degree(n: int, edges: list[Edge]) -> list[int]:
    out = [0] * n
    for a, b in edges:
        out[a] += 1
        out[b] += 1
    return out


async def poll(ready: Callable[[], bool], timeout: float) -> bool:
    """Poll ``ready`` every 20 ms until true (True) or ``timeout`` seconds passed (False)."""
    with trio.move_on_after(timeout):
        while not ready():
            await trio.sleep(0.02)
    return ready()


async def wait_for(what: str, ready: Callable[[], bool], timeout: float) -> None:
    """Poll ``ready`` until true; :class:`NetworkError` naming ``what`` after ``timeout``."""
    if not await poll(ready, timeout):
        raise NetworkError(f"{what} not reached within {timeout:.0f} s")


def mesh_counts_formed(counts: list[tuple[int, int]], want: list[int], low: int) -> bool:
    """Node ``i``, with ``counts[i]`` = (connections, of them in its gossip mesh), has
    at least ``want[i]`` connections and ``min(low, want[i])`` of them in its mesh."""
    return all(
        peers >= w and mesh >= min(low, w) for (peers, mesh), w in zip(counts, want, strict=True)
    )


def mesh_formed(meshes: list[set[str]], peers: list[set[str]], want: list[int], low: int) -> bool:
    """:func:`mesh_counts_formed` from each node's mesh and connected peers."""
    return mesh_counts_formed(
        [(len(p), len(m & p)) for m, p in zip(meshes, peers, strict=True)], want, low
    )


@dataclass
class Outcome(Generic[T]):
    """A measurement's result or error, carried out of the nodes' contexts.

    A libp2p transport torn down inside a cancelled scope turns an exception, or
    a ``return``, crossing it into a ``Cancelled`` that an outer scope absorbs
    (``open_node`` no longer does that, but a bench must not depend on every
    context on the way). Measurements store what they produced here and the
    caller returns or raises it once every node is closed.
    """

    value: T | None = None
    error: BaseException | None = None

    def get(self) -> T:
        """The value, or raise the error (or NetworkError if there is neither)."""
        if self.error is not None:
            raise self.error
        if self.value is None:
            raise NetworkError("the measurement ended without a result")
        return self.value


def first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first exception of a (nested) exception group."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        inner = inner.exceptions[0]
    return inner


@dataclass
class Cluster:
    nodes: list[Node]
    edges: list[Edge]
    root: Path

    @property
    def n(self) -> int:
        return len(self.nodes)

    def edges_now(self) -> list[Edge]:
        """The connections actually open (peer exchange may have added some)."""
        index = {node.transport.peer_id: i for i, node in enumerate(self.nodes)}
        out: set[Edge] = set()
        for i, node in enumerate(self.nodes):
            for peer in node.transport.peers():
                j = index.get(peer)
                if j is not None and (j, i) not in out:
                    out.add((i, j))
        return sorted(out)

    def meshes(self) -> list[set[str]]:
        return [set(mesh_peers(node.transport)) for node in self.nodes]

    def roots(self) -> set[bytes]:
        return {node.store.replica.root() for node in self.nodes}


def node_config(data_dir: Path, **overrides: object) -> NodeConfig:
    """A benchmark node: loopback, NORMAL durability (N nodes share one disk), no
    sleep-time learning (it would write fix proposals of its own mid-measurement),
    no exploration (the topology is the bench's: convergence compares against raw
    gossipsub on the same edges)."""
    base = NodeConfig(
        data_dir=data_dir, synchronous="NORMAL", learn=False, explore_interval=86_400.0
    )
    return base.with_overrides(**overrides)


@asynccontextmanager
async def open_cluster(
    root: Path,
    n: int,
    *,
    k: int = 2,
    verifiers: int = 1,
    skip: frozenset[int] = frozenset(),
    prepared: bool = False,
    **overrides: object,
) -> AsyncIterator[Cluster]:
    """``n`` nodes connected along :func:`ring_edges`, gossip mesh formed.

    The data dirs are made by :func:`~gossipmind.testnet.setup.prepare` unless
    ``prepared``. Nodes in ``skip`` are not started (a late joiner).
    """
    if not prepared:
        prepare(root, n, min(verifiers, n - 1))
    edges = [(a, b) for a, b in ring_edges(n, k) if a not in skip and b not in skip]
    ready = False
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for i in range(n):
            if i in skip:
                continue
            cfg = node_config(root / f"node-{i}", min_peers=min(2 * k, n - 1), **overrides)
            nodes.append(await stack.enter_async_context(open_node(cfg)))
        index = [i for i in range(n) if i not in skip]
        pos = {i: p for p, i in enumerate(index)}
        for a, b in edges:
            await nodes[pos[a]].transport.connect(nodes[pos[b]].transport.addrs()[0])
        cluster = Cluster(nodes, [(pos[a], pos[b]) for a, b in edges], root)
        ready = await cluster_ready(cluster)
        if ready:
            settle_heap()  # as `gossipmind node` does once its nodes started
            try:
                yield cluster
            finally:
                unsettle_heap()
    if not ready:  # raised here, once the nodes are closed (see Outcome)
        raise NetworkError(f"no gossip mesh or no single state root within {MESH_TIMEOUT:.0f} s")


async def cluster_ready(cluster: Cluster, timeout: float = MESH_TIMEOUT) -> bool:
    """Until every node has its gossip mesh and every store has the same root."""
    low = TransportConfig(seed=bytes(32), topic="t").degree_low
    nodes = cluster.nodes
    want = degree(cluster.n, cluster.edges)

    def ready() -> bool:
        peers = [set(node.transport.peers()) for node in nodes]
        return mesh_formed(cluster.meshes(), peers, want, low) and len(cluster.roots()) == 1

    return await poll(ready, timeout)


@dataclass
class Arrivals:
    """When each item (an op id, a raw message tag) reached each of ``need`` receivers.

    ``started[key]`` is set by the sender; ``done[key]`` is the time the last of the
    ``need`` receivers got it. :meth:`wait` returns when an item is done.
    """

    need: int
    started: dict[bytes, float] = field(default_factory=dict)
    seen: dict[bytes, int] = field(default_factory=dict)
    done: dict[bytes, float] = field(default_factory=dict)
    changed: trio.Event = field(default_factory=trio.Event)

    def arrived(self, key: bytes, t: float) -> None:
        count = self.seen.get(key, 0) + 1
        if count < self.need:
            self.seen[key] = count
            return
        self.seen.pop(key, None)
        self.done[key] = t
        self.changed.set()
        self.changed = trio.Event()

    async def watch_node(self, recv: trio.MemoryReceiveChannel[Op]) -> None:
        """Consume one node's ``subscribe()`` channel (subscribe before writing)."""
        async with recv:
            async for op in recv:
                self.arrived(op.id, time.perf_counter())

    async def wait(self, key: bytes, timeout: float) -> bool:
        """Until ``key`` is done (True) or ``timeout`` seconds passed (False)."""
        with trio.move_on_after(timeout):
            while key not in self.done:
                await self.changed.wait()
        return key in self.done

    async def wait_all(self, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while self.outstanding():
                await self.changed.wait()
        return not self.outstanding()

    def latencies(self) -> list[float]:
        return [self.done[k] - t for k, t in self.started.items() if k in self.done]

    def outstanding(self) -> int:
        """Items started and not done (every done item was started first)."""
        return len(self.started) - len(self.done)


async def write_timed(arrivals: Arrivals, node: Node, kind: str, body: dict[str, Any]) -> Op:
    """``node.write`` with its start time recorded (the writer applies it at once)."""
    t0 = time.perf_counter()
    op = await node.write(kind, body)
    arrivals.started[op.id] = t0
    return op


# --- the raw-gossipsub baseline ---------------------------------------------------


def _accept_all(data: bytes) -> bool:
    return True


@dataclass
class RawFleet:
    """Bare libp2p transports on the cluster's edges; messages are ``tag(8) || padding``."""

    transports: list[Libp2pTransport]
    arrivals: Arrivals

    async def watch(self, i: int) -> None:
        async for _peer, data in self.transports[i].messages():
            self.arrivals.arrived(data[:8], time.perf_counter())

    async def publish(self, i: int, tag: bytes, size: int) -> None:
        data = tag + bytes(max(0, size - len(tag)))
        self.arrivals.started[tag] = time.perf_counter()
        await self.transports[i].publish(data)


@asynccontextmanager
async def open_raw_fleet(n: int, edges: list[Edge], topic: str) -> AsyncIterator[RawFleet]:
    """``n`` libp2p transports joined along ``edges``, mesh formed, accepting everything."""
    from gossipmind.net.host import open_libp2p_transport

    formed = False
    async with AsyncExitStack() as stack:
        ts: list[Libp2pTransport] = []
        for _ in range(n):
            cfg = TransportConfig(seed=os.urandom(32), topic=topic)
            ts.append(await stack.enter_async_context(open_libp2p_transport(cfg, _accept_all)))
        for a, b in edges:
            await ts[a].connect(ts[b].addrs()[0])
        low = ts[0].config.degree_low
        want = degree(n, edges)

        def ready() -> bool:
            peers = [set(t.peers()) for t in ts]
            return mesh_formed([set(mesh_peers(t)) for t in ts], peers, want, low)

        formed = await poll(ready, MESH_TIMEOUT)
        if formed:
            settle_heap()  # the same for the baseline's hosts
            try:
                fleet = RawFleet(ts, Arrivals(need=n - 1))
                async with trio.open_nursery() as nursery:
                    for i in range(n):
                        nursery.start_soon(fleet.watch, i)
                    yield fleet
                    nursery.cancel_scope.cancel()
            finally:
                unsettle_heap()
    if not formed:
        raise NetworkError(f"no raw gossipsub mesh within {MESH_TIMEOUT:.0f} s")


# --- figures ------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of durations in seconds, as milliseconds."""
    if not values:
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    return {
        f"{name}_ms": round(1000 * percentile(values, p), 2)
        for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: other work on the machine shows here."""
    return [round(x, 2) for x in os.getloadavg()]
