"""Fixes from the benchmarks review: catch-up after a declined session, convergence's
writer pacing, Ctrl-C in the multi-process fleet and in `gossipmind bench` (all),
and `bench --json <name>`.

Real nodes on 127.0.0.1, real stores and real child processes; no wall-clock figure
is asserted.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from gossipmind.bench import catchup, convergence, fleet
from gossipmind.bench.cluster import Arrivals, Cluster
from gossipmind.cli.main import cli
from gossipmind.core.ops import Op
from gossipmind.node.node import Node

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")  # see conftest.py


def test_catchup_ends_when_a_neighbour_declined_a_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A session of the late node that a busy neighbour declines (bye "busy") is
    neither completed nor failed; the bench must still see the sessions as ended."""
    monkeypatch.setattr(catchup, "CATCHUP_TIMEOUT", 15.0)
    join = catchup._join
    late: list[Node] = []

    async def busy(node: Node, seconds: float) -> None:
        async with node._session_lock:  # as while a session with another peer runs
            await trio.sleep(seconds)

    async def provoke(cluster: Cluster, node: Node) -> None:
        """Once the late node has a neighbour, hold every neighbour's session slot
        and have the late node start sessions: they are declined "busy" whatever
        the peer ids (which side starts a session at connection depends on them)."""
        with trio.fail_after(60):
            while not node.transport.peers():
                await trio.sleep(0.01)
        async with trio.open_nursery() as inner:
            for other in cluster.nodes:
                inner.start_soon(busy, other, 1.0)
            while not all(other._session_lock.locked() for other in cluster.nodes):
                await trio.sleep(0.005)
            for peer in node.transport.peers():
                node.start_sync(peer)

    async def busy_join(cluster: Cluster, node: Node, index: int) -> dict[str, Any]:
        late.append(node)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(provoke, cluster, node)
            return await join(cluster, node, index)

    monkeypatch.setattr(catchup, "_join", busy_join)
    r = catchup.run(nodes=5, missing=200, base=200)
    assert r["missing_ops"] == 200 == r["ops_received"]
    s = late[0].sync
    assert s.declined_by_reason.get("busy", 0) >= 1  # the case under test happened
    assert s.sessions == s.completed + s.failed + sum(s.declined_by_reason.values())


def test_convergence_writer_waits_its_batch_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node writes at most one sample op per batch interval, so no op waits in
    its writer's batcher behind the previous one."""
    writes: dict[int, list[float]] = defaultdict(list)
    intervals: dict[int, float] = {}
    timed = convergence.write_timed

    async def spy(arrivals: Arrivals, node: Node, kind: str, body: dict[str, Any]) -> Op:
        writes[id(node)].append(trio.current_time())
        intervals[id(node)] = node.batcher.interval
        return await timed(arrivals, node, kind, body)

    monkeypatch.setattr(convergence, "write_timed", spy)
    r = convergence.run(nodes=2, samples=16, warmup=2, pause=0.005)
    assert r["timeouts"] == {"ours": 0, "raw": 0} and r["all_roots_equal"]
    assert sum(len(ts) for ts in writes.values()) == 18
    assert max(len(ts) for ts in writes.values()) >= 2  # a node wrote more than once
    for node, ts in writes.items():
        assert intervals[node] >= 0.05  # at least the default gossip_interval
        for a, b in itertools.pairwise(ts):
            # writes of one node in any one interval: at most one
            assert b - a >= intervals[node], (a, b)


def _fleet_workers() -> list[int]:
    """Live child processes of this one that run a bench worker."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and b"fleet_worker" in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_an_interrupted_fleet_raises_keyboard_interrupt(tmp_path: Path) -> None:
    """Ctrl-C inside the worker-process fleet comes out as KeyboardInterrupt (the CLI
    says "Aborted!"), not as an exception group; the workers are gone."""

    async def main() -> None:
        async with fleet.open_fleet(tmp_path, 2, 2, 100):
            raise KeyboardInterrupt

    with pytest.raises(BaseException) as caught:
        trio.run(main)
    assert type(caught.value) is KeyboardInterrupt
    assert _fleet_workers() == []


HARNESS = """
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)
from gossipmind.cli.bench import isolated
isolated("convergence")
"""


def test_ctrl_c_during_bench_all_leaves_no_temp_dir(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the process group) while `gossipmind bench` runs a benchmark
    in its child process: the child's node data dirs are removed too."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HARNESS],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(1200):  # until the child's nodes have their data dirs (<= 120 s)
            if list(tmp_path.glob("**/gm-bench-conv-*/node-*")) or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the benchmark ended before it was interrupted"
        assert list(tmp_path.glob("**/gm-bench-conv-*/node-*"))
        time.sleep(3)  # its nodes start and sample (not timed: any moment will do)
        assert proc.poll() is None
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_group_json_before_the_subcommand_prints_json() -> None:
    out = CliRunner().invoke(cli, ["bench", "--json", "query", "--samples", "100"])
    assert out.exit_code in (0, 1), out.output
    r = json.loads(out.output)
    assert r["name"] == "query" and r["value"] > 0
