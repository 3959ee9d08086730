"""bench query runs end to end and honours the result contract (no timing asserts)."""

from __future__ import annotations

from gossipmind.bench.query import run


def test_query_bench_contract() -> None:
    r = run(n=300, http_n=30)
    for key in ("name", "value", "unit", "baseline", "ratio", "target", "passed"):
        assert key in r
    assert r["name"] == "query" and r["value"] > 0 and r["baseline"] > 0
    assert abs(r["ratio"] - r["value"] / r["baseline"]) < 1e-3
    for part in ("bare_call", "get_fix_cache", "get_fix_http", "resilient_success"):
        assert r[part]["p50_us"] > 0 and r[part]["p99_us"] >= r[part]["p50_us"]
