"""`gossipmind bench` (all) runs each benchmark in a fresh interpreter."""

from __future__ import annotations

import sys

import pytest

from gossipmind.cli import bench as bench_cli
from gossipmind.core.errors import ConfigError, GossipmindError


def test_a_benchmark_runs_in_its_own_process_and_its_result_comes_back() -> None:
    r = bench_cli.isolated("query")
    assert r["name"] == "query" and r["value"] > 0 and r["baseline"] > 0
    assert set(bench_cli.ALL) >= {"ingest", "query", "convergence", "throughput"}


def test_an_unknown_benchmark_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown benchmark 'nope'"):
        bench_cli.isolated("nope")


def test_a_benchmark_that_fails_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the child exits 1, writes nothing
    with pytest.raises(GossipmindError, match="benchmark query failed \\(exit status 1\\)"):
        bench_cli.isolated("query")
