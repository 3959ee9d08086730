"""`gossipmind bench query`: what the agent's hot path pays.

A real node (its SQLite store, its HTTP API on 127.0.0.1) runs in a background
thread with one accepted fix. In the agent's thread we time, per call:

* a bare function call (the baseline every figure is shown beside);
* ``Client.fix_for(pattern)`` — the fix from the SDK's local cache;
* ``GET /v1/fix`` over HTTP — the same answer from the node;
* a ``@client.resilient`` function on its success path.

The headline ratio is cache p99 / HTTP p99 (target ≤ 0.1: the cache must be at
least ten times faster than asking the node).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gossipmind.api.client import Client
from gossipmind.bench.common import machine, result
from gossipmind.testing.nodethread import NodeThread


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    s = sorted(samples_ns)
    return {
        "p50_us": round(s[len(s) // 2] / 1000, 3),
        "p99_us": round(s[min(len(s) - 1, int(len(s) * 0.99))] / 1000, 3),
        "mean_us": round(statistics.fmean(s) / 1000, 3),
    }


def timed(fn: Callable[[], object], n: int) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def run(n: int = 20_000, http_n: int = 1000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gm-bench-query-") as tmp, NodeThread(Path(tmp)) as nt:
        client = Client(nt.dir)
        try:
            if not client.wait_ready(10) or client.fix_for(nt.pattern) is None:
                raise RuntimeError("the SDK cache did not receive the accepted fix")

            def bare(x: int = 1) -> int:
                return x + 1

            wrapped = client.resilient(service="search", operation="query")(bare)
            http = client._api()
            path = f"/v1/fix?pattern={nt.pattern.hex()}"
            for _ in range(200):  # warm up every path
                bare()
                wrapped()
                client.fix_for(nt.pattern)
            bare_ns = timed(bare, n)
            cache_ns = timed(lambda: client.fix_for(nt.pattern), n)
            resilient_ns = timed(wrapped, n)
            http_ns = timed(lambda: http.request("GET", path), http_n)
        finally:
            client.close()
    bare_p, cache_p, res_p, http_p = map(percentiles, (bare_ns, cache_ns, resilient_ns, http_ns))
    return result(
        "query",
        cache_p["p99_us"],
        "µs (get_fix from the SDK cache, p99)",
        http_p["p99_us"],
        "<= 0.1",
        bare_call=bare_p,
        get_fix_cache=cache_p | {"x_bare_p50": round(cache_p["p50_us"] / bare_p["p50_us"], 1)},
        get_fix_http=http_p | {"x_bare_p50": round(http_p["p50_us"] / bare_p["p50_us"], 1)},
        resilient_success=res_p
        | {
            "x_bare_p50": round(res_p["p50_us"] / bare_p["p50_us"], 1),
            "overhead_p50_us": round(res_p["p50_us"] - bare_p["p50_us"], 3),
        },
        samples=n,
        http_samples=http_n,
        machine=machine(),
    )
