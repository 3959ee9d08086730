"""The network benchmarks in tiny configurations: contract shape and sane figures.

Real libp2p nodes on 127.0.0.1 in one process. No wall-clock target is asserted
here: the figures depend on the machine and its load; `gossipmind bench` reports them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from gossipmind.bench import catchup, cluster, convergence, fleet, throughput
from gossipmind.cli.main import cli
from gossipmind.core.errors import NetworkError

# py-libp2p leaks the socket of a dial cancelled mid-upgrade when a node closes (see
# conftest.py); that is not what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

CONTRACT = {"name", "value", "unit", "baseline", "ratio", "target", "passed"}


def check_contract(r: dict[str, Any], name: str, target: str) -> None:
    assert set(r) >= CONTRACT
    assert r["name"] == name
    assert r["target"] == f"ratio {target}"
    assert isinstance(r["passed"], bool)
    assert r["value"] > 0 and r["baseline"] > 0
    assert math.isclose(r["ratio"], r["value"] / r["baseline"], rel_tol=1e-3, abs_tol=1e-3)
    op, limit = target.split()
    assert r["passed"] == (r["ratio"] <= float(limit) if op == "<=" else r["ratio"] >= float(limit))
    assert r["machine"]["cpus"] >= 1
    json.dumps(r)  # printable as JSON as is


def test_convergence_tiny() -> None:
    r = convergence.run(nodes=3, samples=8, warmup=2, pause=0.005)
    check_contract(r, "convergence", "<= 2")
    assert r["nodes"] == 3 and r["samples"] == 8
    assert r["timeouts"] == {"ours": 0, "raw": 0}
    assert r["all_roots_equal"]
    for side in ("ours", "raw_gossipsub"):
        s = r[side]
        assert 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert r["value"] == r["ours"]["p99_ms"] and r["baseline"] == r["raw_gossipsub"]["p99_ms"]
    assert r["message_bytes"] > 300  # a real op, batched alone
    assert r["topology"]["degrees"] == [2]  # 3 nodes: a triangle


def test_catchup_tiny() -> None:
    r = catchup.run(nodes=3, missing=300, base=200)
    check_contract(r, "catchup", "<= 1.15")
    assert r["baseline"] == 1.0
    assert r["missing_ops"] == 300 == r["ops_received"]
    assert r["kb_ops"] >= 500
    assert r["sync_bytes"] >= r["missing_op_bytes"] > 300 * 300
    assert r["time_s"] > 0 and r["ingest_time_s"] > 0 and r["ingest_rate_ops_s"] > 0
    assert math.isclose(r["time_ratio"], r["time_s"] / r["ingest_time_s"], rel_tol=0.1)


def test_throughput_tiny() -> None:
    r = throughput.run(nodes=3, seconds=2.0, warmup=1.0, window=200)
    check_contract(r, "throughput", ">= 0.5")
    assert r["all_converged"]
    assert r["cores"] >= 1 and r["verify_rate_one_core"] > 0
    limit = r["cores"] * r["verify_rate_one_core"] / 3
    assert math.isclose(r["baseline"], limit, rel_tol=1e-3)
    assert r["ops_written"] >= r["value"] * r["period_s"] * 0.99
    assert 0 < r["lag"]["p50_ms"] <= r["lag"]["p99_ms"]


def test_cli_runs_a_network_bench_as_json() -> None:
    out = CliRunner().invoke(
        cli, ["bench", "catchup", "--nodes", "2", "--missing", "50", "--base", "0", "--json"]
    )
    assert out.exit_code in (0, 1), out.output
    r = json.loads(out.output)
    check_contract(r, "catchup", "<= 1.15")


def test_topology_and_percentiles() -> None:
    assert cluster.ring_edges(3) == [(0, 1), (0, 2), (1, 2)]
    edges = cluster.ring_edges(10)
    assert len(edges) == 20 and set(cluster.degree(10, edges)) == {4}
    assert cluster.percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert cluster.percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert cluster.summary_ms([]) == {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}


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


def test_throughput_over_worker_processes() -> None:
    """The deployment shape: nodes in separate processes, the parent keeping the books."""
    r = throughput.run(nodes=3, seconds=2.0, warmup=1.0, window=200, processes=3)
    check_contract(r, "throughput", ">= 0.5")
    assert r["processes"] == 3 and r["all_converged"]
    assert r["ops_written"] >= r["value"] * r["period_s"] * 0.99
    assert 0 < r["lag"]["p50_ms"] <= r["lag"]["p99_ms"]
    assert r["ops_per_gossip_message"] >= 1
    assert r["cpu_busy_cores"] > 0  # the workers' CPU time is counted
    assert r["verify_rate_before_after"][1] > 0  # timed on ops the workers wrote
    assert _fleet_workers() == []


def test_fleet_reports_a_worker_that_cannot_start(tmp_path: Path) -> None:
    async def main() -> None:
        async with fleet.open_fleet(tmp_path, 2, 2, 100, gossip_interval=-1.0):
            raise AssertionError("the fleet must not form")

    with pytest.raises(
        NetworkError,
        match=r"bench worker \d exited early: .*gossip_interval = -1.0 is out of range",
    ):
        trio.run(main)
    assert _fleet_workers() == []


def test_fleet_slices() -> None:
    assert fleet.slices(10, 10) == [[i] for i in range(10)]
    assert fleet.slices(10, 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert fleet.slices(3, 8) == [[0], [1], [2]]


def test_cli_says_what_a_network_bench_is_doing() -> None:
    out = CliRunner().invoke(
        cli, ["bench", "catchup", "--nodes", "2", "--missing", "50", "--base", "0"]
    )
    assert out.exit_code in (0, 1), out.output
    assert "catchup: 2 nodes, a late one missing 50 of 50…" in out.output
    assert "│ catchup" in out.output  # then the table


def test_fleet_books_whatever_order_reports_arrive_in() -> None:
    books = fleet.Books(need=3)
    books.wrote(0, b"a", 1.0)
    books.applied(b"a", 2, 1.5)  # two nodes of one worker
    assert books.outstanding() == 1 and books.done_by == {}
    books.applied(b"b", 3, 2.0)  # applied everywhere before its writer's report came
    books.applied(b"a", 1, 1.25)  # the last node, but its report is older
    assert books.done == {b"a": 1.5, b"b": 2.0}
    assert books.outstanding() == 0 and books.done_by == {0: 1}
    books.wrote(1, b"b", 0.5)
    assert books.outstanding() == 0 and books.done_by == {0: 1, 1: 1}
    books.wrote(1, b"c", 3.0)
    assert books.outstanding() == 1
    assert sorted(books.completed_between(0.0, 1.75)) == [0.5]  # a: 1.5 - 1.0
