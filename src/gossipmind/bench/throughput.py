"""`gossipmind bench throughput`: sustained ops/s with every node converging.

``N`` real nodes (libp2p on 127.0.0.1, SQLite stores, one trio run) as in
`bench convergence`. Every node writes (``Node.write``: sign, persist, gossip)
as fast as back-pressure allows, where the back-pressure is convergence itself:
writers pause while ``window`` ops are written but not yet applied on *every*
node. After a warm-up, the value is the rate at which ops became applied on all
``N`` nodes over the measurement period; at the end writing stops and every node
must reach the same state root, or the run fails.

Baseline, measured in the same run: the verify-bound limit ``cores x V / N``,
where ``V`` is the Ed25519 verify rate of one core, timed before the nodes start
(on ops of the same kind) and after they stop (on the ops they wrote); the
higher of the two counts, since other load on the machine varies. Every node
must verify every op it did not write, so ``N`` nodes on ``cores`` cores can
never apply more than that. Target ratio >= 0.5.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from gossipmind.bench.cluster import (
    Arrivals,
    Cluster,
    Outcome,
    first_leaf,
    load_average,
    open_cluster,
    poll,
    summary_ms,
    write_timed,
)
from gossipmind.bench.common import machine, result
from gossipmind.bench.fleet import open_fleet
from gossipmind.core import ops as opsmod
from gossipmind.core.errors import GossipmindError
from gossipmind.core.ops import Op
from gossipmind.testing import KB, sample_report

DRAIN_TIMEOUT = 60.0
VERIFY_SAMPLE = 3000
WARMUP = 5.0  # seconds of writing before the measured period


def verify_rate(ops: list[Op], seconds: float = 1.0) -> float:
    """Signatures verified per second on one core (the calling thread)."""
    decoded = [opsmod.decode(op.raw) for op in ops]
    done = 0
    t0 = time.perf_counter()
    for op in itertools.cycle(decoded):
        if not op.verify_signature():
            raise AssertionError("bench ops must verify")
        done += 1
        if done % 256 == 0 and time.perf_counter() - t0 >= seconds:
            break
    return done / (time.perf_counter() - t0)


def _sample_ops(n: int) -> list[Op]:
    """``n`` signed reports of the kind the nodes write (to time verification on)."""
    kb = KB(seed=3)
    kb.grant("admin", "agent", "member")
    kb.sync("admin", "agent")
    return [kb.report("agent", template=f"bench verify {i} <*>") for i in range(n)]


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Driver:
    """Writers on every node, paused while ``window`` ops are not yet everywhere."""

    def __init__(self, cluster: Cluster, window: int) -> None:
        self.cluster = cluster
        self.window = window
        self.arrivals = Arrivals(need=cluster.n)
        self.written: list[Op] = []
        self._counter = itertools.count()

    async def writer(self, i: int) -> None:
        node = self.cluster.nodes[i]
        arrivals = self.arrivals
        while True:
            while arrivals.outstanding() >= self.window:
                await arrivals.changed.wait()
            k = next(self._counter)
            body = sample_report(template=f"bench throughput {k % 997} <*>", count=1 + k % 7)
            self.written.append(await write_timed(arrivals, node, "pattern.report", body))
            await trio.lowlevel.checkpoint()

    def completed_between(self, t0: float, t1: float) -> list[float]:
        """Latencies of the ops that became applied everywhere within [t0, t1)."""
        a = self.arrivals
        return [a.done[k] - a.started[k] for k in a.started if k in a.done and t0 <= a.done[k] < t1]


async def _measure(
    nodes: int, window: int, warmup: float, seconds: float, root: Path
) -> dict[str, Any]:
    out: Outcome[dict[str, Any]] = Outcome()
    async with open_cluster(root, nodes) as cluster:
        try:
            out.value = await _drive(cluster, window, warmup, seconds)
        except* GossipmindError as group:
            out.error = first_leaf(group)
    return out.get()


async def _drive(cluster: Cluster, window: int, warmup: float, seconds: float) -> dict[str, Any]:
    driver = Driver(cluster, window)
    async with trio.open_nursery() as watchers:
        for node in cluster.nodes:
            watchers.start_soon(driver.arrivals.watch_node, node.subscribe(buffer=10**7))
        async with trio.open_nursery() as writers:
            for i in range(cluster.n):
                writers.start_soon(driver.writer, i)
            await trio.sleep(warmup)
            t0, cpu0 = time.perf_counter(), time.process_time()
            await trio.sleep(seconds)
            t1, cpu1 = time.perf_counter(), time.process_time()
            writers.cancel_scope.cancel()
        drained = await driver.arrivals.wait_all(DRAIN_TIMEOUT)
        t_drained = time.perf_counter()
        one_root = await poll(lambda: len(cluster.roots()) == 1, DRAIN_TIMEOUT)
        watchers.cancel_scope.cancel()
    stats = [node.status() for node in cluster.nodes]
    return {
        "latencies": driver.completed_between(t0, t1),
        "period_s": t1 - t0,
        "drain_s": t_drained - t1,
        "converged": drained and one_root,
        "written": len(driver.written),
        "sample": driver.written[:VERIFY_SAMPLE],
        "gossip_messages": sum(s["counters"]["gossip_messages"] for s in stats),
        "gossip_ops": sum(s["counters"]["gossip_ops"] for s in stats),
        "sync_ops_received": sum(s["sync"]["ops_received"] for s in stats),
        "cpu_busy_cores": round((cpu1 - cpu0) / (t1 - t0), 2),
    }


async def _measure_fleet(
    nodes: int, processes: int, window: int, warmup: float, seconds: float, root: Path
) -> dict[str, Any]:
    """As :func:`_drive`, with the nodes in ``processes`` worker processes."""
    async with open_fleet(root, nodes, processes, window) as fleet:
        books = fleet.books
        await fleet.broadcast({"t": "write"})
        await trio.sleep(warmup)
        t0, cpu0 = time.monotonic(), fleet.cpu_seconds() + time.process_time()
        await trio.sleep(seconds)
        t1, cpu1 = time.monotonic(), fleet.cpu_seconds() + time.process_time()
        await fleet.broadcast({"t": "stop"})
        stopped = await fleet.wait(lambda: all(m.stopped for m in fleet.members), DRAIN_TIMEOUT)
        drained = stopped and await fleet.wait(lambda: books.outstanding() == 0, DRAIN_TIMEOUT)
        t_drained = time.monotonic()
        mark = {m.g: m.ticks for m in fleet.members}  # roots reported after the drain

        def one() -> bool:
            fresh = all(m.ticks > mark[m.g] for m in fleet.members)
            return fresh and len(fleet.roots()) == 1

        one_root = await fleet.wait(one, DRAIN_TIMEOUT)
    finals = [m.final or {} for m in fleet.members]
    return {
        "latencies": books.completed_between(t0, t1),
        "period_s": t1 - t0,
        "drain_s": t_drained - t1,
        "converged": drained and one_root,
        "written": len(books.started),
        "sample": [opsmod.decode(raw) for f in finals for raw in f.get("sample", [])][
            :VERIFY_SAMPLE
        ],
        "gossip_messages": sum(f.get("gossip_messages", 0) for f in finals),
        "gossip_ops": sum(f.get("gossip_ops", 0) for f in finals),
        "sync_ops_received": sum(f.get("sync_ops_received", 0) for f in finals),
        "cpu_busy_cores": round((cpu1 - cpu0) / (t1 - t0), 2),
    }


def run(
    nodes: int = 10,
    seconds: float = 15.0,
    warmup: float = WARMUP,
    window: int = 2000,
    processes: int = 1,
) -> dict[str, Any]:
    """Drive ``nodes`` nodes for ``warmup + seconds``; the rate over ``seconds``.

    ``processes`` > 1 spreads the nodes over that many worker processes
    (:mod:`gossipmind.bench.fleet`); 1 runs them all in this process.
    """
    if nodes < 2 or seconds <= 0 or window < 1 or processes < 1:
        raise ValueError("need at least 2 nodes, 1 process, a positive period and window")
    processes = min(processes, nodes)
    load_before = load_average()
    t_start = time.perf_counter()
    v_before = verify_rate(_sample_ops(1000))
    with tempfile.TemporaryDirectory(prefix="gm-bench-tput-") as tmp:
        if processes == 1:
            m = trio.run(_measure, nodes, window, warmup, seconds, Path(tmp))
        else:
            m = trio.run(_measure_fleet, nodes, processes, window, warmup, seconds, Path(tmp))
    v_after = verify_rate(m["sample"])
    v = max(v_before, v_after)  # the machine's other load varies: the stricter limit
    n_cores = cores()
    limit = n_cores * v / nodes
    rate = len(m["latencies"]) / m["period_s"] if m["converged"] else 0.0
    return result(
        "throughput",
        rate,
        "ops/s applied on all nodes",
        limit,
        ">= 0.5",
        nodes=nodes,
        processes=processes,
        cores=n_cores,
        cpu_busy_cores=m.get("cpu_busy_cores"),
        verify_rate_one_core=round(v, 1),
        verify_rate_before_after=[round(v_before, 1), round(v_after, 1)],
        window=window,
        period_s=round(m["period_s"], 2),
        warmup_s=warmup,
        ops_written=m["written"],
        all_converged=m["converged"],
        drain_s=round(m["drain_s"], 2),
        lag=summary_ms(m["latencies"]),
        ops_per_gossip_message=round(m["gossip_ops"] / max(1, m["gossip_messages"]), 1),
        ops_via_sync=m["sync_ops_received"],
        elapsed_s=round(time.perf_counter() - t_start, 2),
        load_average={"before": load_before, "after": load_average()},
        machine=machine(),
    )
