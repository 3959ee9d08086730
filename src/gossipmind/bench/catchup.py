"""`gossipmind bench catchup`: what it costs a node to catch up on K ops it missed.

A network of ``N`` nodes (real libp2p on 127.0.0.1, SQLite stores) shares a
history of ``base`` ops; then ``K`` more ops are written while one node is
offline. The history is built directly in the stores (signed by the nodes' own
keys), so setting up a large knowledge base takes seconds. The others start and
form their mesh; then the late node starts and dials its usual neighbours, and
anti-entropy sync alone brings it up to date (nothing is written meanwhile, so
gossip carries nothing).

Value: every byte every node sent on a sync stream, from the late node's first
connection until it holds all ``K`` ops and no sync session of its is still
running (frame payloads from the nodes' sync counters, plus an upper bound of 3
bytes for the length prefix of each frame; in-sync rounds between the other
nodes in that window are included), divided by the bytes of those ``K`` ops.
Baseline: 1 (the ops themselves); target ratio <= 1.15. A design that resends
ops, or whose fixed cost grows with the knowledge base, fails here: the base is
as large as what is missing.

Also reported: the catch-up time beside ``K / ingest rate``, the ingest rate
measured in the same run by ingesting the same ``K`` ops into a copy of the late
node's store (``Store.ingest_stream``, as `gossipmind bench ingest` does).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from gossipmind.bench.cluster import (
    Cluster,
    Outcome,
    load_average,
    node_config,
    open_cluster,
    ring_edges,
    wait_for,
)
from gossipmind.bench.common import machine, result
from gossipmind.core.errors import GossipmindError, NetworkError
from gossipmind.core.replica import Replica
from gossipmind.node.node import Node, open_node
from gossipmind.store.datadir import DataDir
from gossipmind.store.keyfile import read_key
from gossipmind.store.sqlite import Store
from gossipmind.testing import sample_report
from gossipmind.testnet.setup import prepare

CATCHUP_TIMEOUT = 120.0
INGEST_BATCH = 500
FRAME_PREFIX_MAX = 3  # a frame is at most 1 MiB: its uvarint length takes <= 3 bytes


def build_history(root: Path, n: int, base: int, missing: int) -> tuple[list[bytes], list[bytes]]:
    """Prepare ``n`` data dirs; write ``base + missing`` ops signed by every node's key.

    Every store but the last gets all of them; the last (the late node) only the
    first ``base``. The ops are authored on an in-memory replica and ingested into
    one store, whose file is then copied (stores hold no per-node data). Returns
    (base raws, missing raws), each in causal order.
    """
    specs = prepare(root, n, min(1, n - 1))
    ids = [read_key(DataDir(s.dir).key) for s in specs]
    stores = [DataDir(s.dir).store for s in specs]
    with Store.open(stores[0], synchronous="NORMAL") as first:
        authoring = Replica(first.replica.genesis)
        for _, raw in first.iter_raw(0, 10**9):
            authoring.ingest_raw(raw)
    ts = int(time.time() * 1000)
    raws: list[bytes] = []
    for i in range(base + missing):
        body = sample_report(template=f"bench catchup {i % 997} <*>", count=1 + i % 7)
        raws.append(authoring.create(ids[i % n], "pattern.report", body, ts + i).raw)
    _ingest_into(stores[0], raws[:base])
    shutil.copy(stores[0], stores[-1])
    _ingest_into(stores[0], raws[base:])
    for path in stores[1:-1]:
        shutil.copy(stores[0], path)
    return raws[:base], raws[base:]


def _ingest_into(path: Path, raws: list[bytes]) -> None:
    with Store.open(path, synchronous="NORMAL") as store:
        batches = (raws[i : i + 2000] for i in range(0, len(raws), 2000))
        for res in store.ingest_stream(batches):
            if res.rejected or res.pending:
                raise NetworkError(f"history did not apply on {path}")


def ingest_seconds(store_path: Path, raws: list[bytes]) -> float:
    """Time to ingest ``raws`` into the store at ``store_path`` (a copy, used once)."""
    store = Store.open(store_path, synchronous="NORMAL")
    try:
        t0 = time.perf_counter()
        batches = (raws[i : i + INGEST_BATCH] for i in range(0, len(raws), INGEST_BATCH))
        for res in store.ingest_stream(batches):
            if res.rejected or res.pending:
                raise NetworkError("the missing ops did not apply on the store copy")
        return time.perf_counter() - t0
    finally:
        store.close()


def _idle(node: Node) -> bool:
    """Whether every sync session ``node`` started has ended: completed, failed, or
    declined by the peer (``bye("busy")``, ``bye("later")``: counted in neither)."""
    s = node.sync
    return s.sessions == s.completed + s.failed + sum(s.declined_by_reason.values())


def _sent(nodes: list[Node]) -> tuple[int, int]:
    """Sync payload bytes and frames sent by ``nodes`` so far."""
    return sum(n.sync.bytes_sent for n in nodes), sum(n.sync.frames_sent for n in nodes)


async def _catch_up(root: Path, n: int) -> dict[str, Any]:
    late = n - 1
    out: Outcome[dict[str, Any]] = Outcome()
    async with open_cluster(root, n, skip=frozenset({late}), prepared=True) as cluster:
        cfg = node_config(root / f"node-{late}", min_peers=min(4, n - 1))
        async with open_node(cfg) as node:
            try:
                out.value = await _join(cluster, node, late)
            except GossipmindError as exc:
                out.error = exc
    return out.get()


async def _join(cluster: Cluster, node: Node, late: int) -> dict[str, Any]:
    """Connect the late node to its neighbours; measure until it caught up."""
    target = cluster.nodes[0].store.replica.root()
    n = cluster.n + 1
    neighbours = sorted({b if a == late else a for a, b in ring_edges(n) if late in (a, b)})
    everyone = [*cluster.nodes, node]
    bytes0, frames0 = _sent(everyone)
    t0 = time.perf_counter()
    for j in neighbours:
        await node.transport.connect(cluster.nodes[j].transport.addrs()[0])
    held = len(cluster.nodes[0].store.replica.meta)

    def caught_up() -> bool:  # the root (a hash of every id) only once the count is there
        r = node.store.replica
        return len(r.meta) >= held and r.root() == target

    await wait_for("catch-up", caught_up, CATCHUP_TIMEOUT)
    elapsed = time.perf_counter() - t0
    await wait_for("sync sessions to end", lambda: _idle(node), CATCHUP_TIMEOUT)
    bytes1, frames1 = _sent(everyone)
    return {
        "time_s": elapsed,
        "payload_bytes": bytes1 - bytes0,
        "frames": frames1 - frames0,
        "late_bytes_sent": node.sync.bytes_sent,
        "late_bytes_received": node.sync.bytes_received,
        "sessions": node.sync.sessions,
        "refused": node.sync.refused,
        "ops_received": node.sync.ops_received,
        "neighbours": len(neighbours),
        "kb_ops": len(node.store.replica.meta),
    }


def run(nodes: int = 5, missing: int = 5000, base: int = 5000) -> dict[str, Any]:
    """Measure the catch-up of ``missing`` ops on a knowledge base of ``base`` more."""
    if nodes < 2 or missing < 1 or base < 0:
        raise ValueError("need at least 2 nodes and 1 missing op")
    load_before = load_average()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gm-bench-catchup-") as tmp:
        root = Path(tmp) / "net"
        _, missing_raws = build_history(root, nodes, base, missing)
        copy = Path(tmp) / "late-copy.sqlite3"
        shutil.copy(DataDir(root / f"node-{nodes - 1}").store, copy)
        setup_s = time.perf_counter() - t_start
        m = trio.run(_catch_up, root, nodes)
        t_ingest = ingest_seconds(copy, missing_raws)
    op_bytes = sum(len(r) for r in missing_raws)
    wire = m["payload_bytes"] + FRAME_PREFIX_MAX * m["frames"]
    ingest_rate = missing / t_ingest
    return result(
        "catchup",
        wire / op_bytes,
        "sync bytes / missing op bytes",
        1.0,
        "<= 1.15",
        missing_ops=missing,
        missing_op_bytes=op_bytes,
        sync_bytes=wire,
        sync_bytes_sent_by_late_node=m["late_bytes_sent"],
        sync_bytes_received_by_late_node=m["late_bytes_received"],
        sync_frames=m["frames"],
        sync_sessions=m["sessions"],
        sync_sessions_refused=m["refused"],
        ops_received=m["ops_received"],
        kb_ops=m["kb_ops"],
        nodes=nodes,
        neighbours=m["neighbours"],
        time_s=round(m["time_s"], 3),
        ingest_rate_ops_s=round(ingest_rate, 1),
        ingest_time_s=round(missing / ingest_rate, 3),
        time_ratio=round(m["time_s"] / (missing / ingest_rate), 3),
        setup_s=round(setup_s, 2),
        elapsed_s=round(time.perf_counter() - t_start, 2),
        load_average={"before": load_before, "after": load_average()},
        machine=machine(),
    )
