"""`gossipmind bench convergence`: time for an op to be applied on every node.

``N`` real nodes (libp2p over TCP on 127.0.0.1, SQLite stores) run in one trio
run, connected as a circulant graph (:func:`~gossipmind.bench.cluster.ring_edges`:
each node dials the next two, degree 4). Beside them, in the same process, ``N``
bare libp2p transports are joined along the *same* edges with the same gossipsub
settings and a validator that accepts everything: raw gossipsub.

Samples alternate between the two: an op written on a random node
(``Node.write``: sign, persist, batch, gossip), timed until every node's
``subscribe()`` channel has delivered it as applied (validated, verified,
ingested, durable); then a message of the same size as that op's gossip message
published from the same position in the raw fleet, timed until every other
transport received it. One sample is in flight at a time, with a pause between
samples, and a node writes its next op only once its batch interval
(``gossip_interval``) has passed since its previous op was applied everywhere
(a node sends at most one batch per interval, so a sooner op would wait in its
batcher; raw gossipsub has no batcher), so both sides measure propagation, not
queueing. The mesh of both is formed, and a warm-up is discarded, before
measuring.

Value: our p99 in ms; baseline: raw gossipsub p99 in ms; target ratio <= 2.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from gossipmind.bench.cluster import (
    Arrivals,
    Cluster,
    Outcome,
    degree,
    first_leaf,
    load_average,
    open_cluster,
    open_raw_fleet,
    summary_ms,
    write_timed,
)
from gossipmind.bench.common import machine, result
from gossipmind.core.errors import GossipmindError
from gossipmind.net.gossip import encode_batch
from gossipmind.testing import sample_report

SAMPLE_TIMEOUT = 10.0


def _body(i: int) -> dict[str, Any]:
    return sample_report(template=f"bench convergence {i} <*>", count=1 + i % 5)


async def _measure(
    nodes: int, samples: int, warmup: int, pause: float, seed: int, root: Path
) -> dict[str, Any]:
    out: Outcome[dict[str, Any]] = Outcome()
    t_start = time.perf_counter()
    async with open_cluster(root, nodes) as cluster:
        try:
            out.value = await _sample(cluster, samples, warmup, pause, seed, t_start)
        except* GossipmindError as group:
            out.error = first_leaf(group)
    return out.get()


async def _sample(
    cluster: Cluster, samples: int, warmup: int, pause: float, seed: int, t_start: float
) -> dict[str, Any]:
    rng = random.Random(seed)
    nodes = cluster.n
    edges = cluster.edges_now()
    topic = f"gossipmind-bench/raw/{rng.getrandbits(64):016x}"
    ours = Arrivals(need=nodes)
    kept_ours: list[bytes] = []
    kept_raw: list[bytes] = []
    size = 0
    async with open_raw_fleet(nodes, edges, topic) as raw, trio.open_nursery() as nursery:
        for node in cluster.nodes:
            nursery.start_soon(ours.watch_node, node.subscribe(buffer=100_000))
        setup_s = time.perf_counter() - t_start
        last = [-math.inf] * nodes  # trio time by which each node's latest batch had left
        for i in range(warmup + samples):
            w = rng.randrange(nodes)
            writer = cluster.nodes[w]
            # A node sends at most one batch per interval (gossip_interval, or longer
            # while its pacer widens it): an op written sooner would wait in its
            # batcher. Measure propagation, not that wait.
            await trio.sleep_until(last[w] + writer.batcher.interval)
            op = await write_timed(ours, writer, "pattern.report", _body(i))
            size = len(encode_batch([op.raw]))
            await ours.wait(op.id, SAMPLE_TIMEOUT)
            last[w] = trio.current_time()  # applied everywhere: its batch has left
            await trio.sleep(pause * (0.5 + rng.random()))
            tag = i.to_bytes(8, "big")
            await raw.publish(w, tag, size)
            await raw.arrivals.wait(tag, SAMPLE_TIMEOUT)
            await trio.sleep(pause * (0.5 + rng.random()))
            if i >= warmup:
                kept_ours.append(op.id)
                kept_raw.append(tag)
        nursery.cancel_scope.cancel()
    stats = [node.status() for node in cluster.nodes]
    lat_ours = _kept(ours, kept_ours)
    lat_raw = _kept(raw.arrivals, kept_raw)
    return {
        "ours": lat_ours,
        "raw": lat_raw,
        "timeouts_ours": len(kept_ours) - len(lat_ours),
        "timeouts_raw": len(kept_raw) - len(lat_raw),
        "size": size,
        "edges": edges,
        "setup_s": setup_s,
        "converged": len(cluster.roots()) == 1,
        "gossip_messages": sum(s["counters"]["gossip_messages"] for s in stats),
        "sync_sessions": sum(s["sync"]["sessions"] for s in stats),
        "sync_ops_received": sum(s["sync"]["ops_received"] for s in stats),
    }


def _kept(arrivals: Arrivals, keys: list[bytes]) -> list[float]:
    return [arrivals.done[k] - arrivals.started[k] for k in keys if k in arrivals.done]


def run(
    nodes: int = 10,
    samples: int = 250,
    warmup: int = 20,
    pause: float = 0.01,
    seed: int = 1,
) -> dict[str, Any]:
    """Measure; ``samples`` ops and as many raw messages, alternating."""
    if nodes < 2 or samples < 1:
        raise ValueError("need at least 2 nodes and 1 sample")
    load_before = load_average()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gm-bench-conv-") as tmp:
        m = trio.run(_measure, nodes, samples, warmup, pause, seed, Path(tmp))
    ours, raw = summary_ms(m["ours"]), summary_ms(m["raw"])
    # A sample that never completed counts as the timeout: it must not vanish from p99.
    lat_ours = m["ours"] + [SAMPLE_TIMEOUT] * m["timeouts_ours"]
    lat_raw = m["raw"] + [SAMPLE_TIMEOUT] * m["timeouts_raw"]
    p99_ours = summary_ms(lat_ours)["p99_ms"]
    p99_raw = summary_ms(lat_raw)["p99_ms"]
    return result(
        "convergence",
        p99_ours,
        "ms p99 (applied on all nodes)",
        p99_raw,
        "<= 2",
        nodes=nodes,
        samples=samples,
        warmup=warmup,
        message_bytes=m["size"],
        ours=ours,
        raw_gossipsub=raw,
        timeouts={"ours": m["timeouts_ours"], "raw": m["timeouts_raw"]},
        topology={"edges": len(m["edges"]), "degrees": sorted(set(degree(nodes, m["edges"])))},
        all_roots_equal=m["converged"],
        gossip_messages=m["gossip_messages"],
        sync_sessions=m["sync_sessions"],
        ops_via_sync=m["sync_ops_received"],
        setup_s=round(m["setup_s"], 2),
        elapsed_s=round(time.perf_counter() - t0, 2),
        load_average={"before": load_before, "after": load_average()},
        machine=machine(),
    )
