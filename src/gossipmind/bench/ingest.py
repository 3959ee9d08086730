"""`gossipmind bench ingest`: store + fold throughput beside the raw pipeline limit.

Both sides start from the same raw op bytes on a fresh SQLite file (WAL, same
batch size, same ``synchronous`` setting). The limit is the bare loop every
ingest must do at least: decode (canonical check + hash), verify the signature,
insert the row. The measured side is the real thing: the store applies every
op to the replica (causal checks, authorization, the fold) and persists ops,
heads and materialised state in one transaction per batch.
"""

from __future__ import annotations

import gc
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gossipmind.bench.common import machine, result
from gossipmind.core import ops as opsmod
from gossipmind.core.ops import Op
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, sample_recipe, sample_report

SERVICES = [("payments", "charge"), ("search", "query"), ("llm", "complete"), ("db", "query")]


def build_ops(n: int, authors: int = 20, seed: int = 42) -> KB:
    """A realistic history: many authors reporting concurrently, a few fixes and verdicts."""
    kb = KB(seed=seed)
    names = [f"agent{i}" for i in range(authors)]
    for name in names:
        kb.grant("admin", name, "member")
    kb.grant("admin", "verifier", "verifier", tier=2, scopes=("*",))
    for name in [*names, "verifier"]:
        kb.sync("admin", name)
    fixes: list[bytes] = []
    i = 0
    while len(kb.ops) < n:
        name = names[i % authors]
        svc, op = SERVICES[i % len(SERVICES)]
        kb.report(name, service=svc, operation=op, template=f"failure kind {i % 50} <*>", count=1)
        if i % 500 == 0:
            pattern = sample_report(service="search")["pattern"]
            fixes.append(kb.propose(name, pattern, sample_recipe("search", 2 + (i // 500) % 8)))
        if i % 200 == 0:
            kb.sync(name, names[(i * 7 + 3) % authors])
            kb.sync(name, "verifier")
        if i % 700 == 0 and fixes:
            kb.sync("verifier", name)
            kb.write("verifier", "fix.attest", kb.attest_body(fixes[-1], "search"))
        i += 1
    return kb


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def raw_pipeline(raws: list[bytes], path: Path, batch: int, synchronous: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(
        "CREATE TABLE ops (ord INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, raw BLOB NOT NULL, "
        "author BLOB NOT NULL, seq INTEGER NOT NULL, lamport INTEGER NOT NULL, kind TEXT NOT NULL, "
        "ts INTEGER NOT NULL)"
    )
    conn.execute("CREATE INDEX ops_author_seq ON ops (author, seq)")
    for start in range(0, len(raws), batch):
        rows = []
        for raw in raws[start : start + batch]:
            op = opsmod.decode(raw)
            if not op.verify_signature():
                raise AssertionError("bench ops must verify")
            rows.append((op.id, op.raw, op.author, op.seq, op.lamport, op.kind, op.ts))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO ops (id, raw, author, seq, lamport, kind, ts) VALUES (?,?,?,?,?,?,?)", rows
        )
        conn.execute("COMMIT")
    conn.close()


def store_ingest(genesis: Op, raws: list[bytes], path: Path, batch: int, synchronous: str) -> bytes:
    store = Store.create(path, genesis, synchronous=synchronous)
    try:
        batches = (raws[start : start + batch] for start in range(0, len(raws), batch))
        for res in store.ingest_stream(batches):
            if res.rejected or res.pending:
                raise AssertionError(f"bench ops must apply: {res.rejected[:1]}")
        return store.replica.root()
    finally:
        store.close()


def run(n: int = 50_000, batch: int = 500, synchronous: str = "NORMAL") -> dict[str, Any]:
    kb = build_ops(n)
    raws = [op.raw for op in kb.ops[1:]]
    del kb.replicas  # the authoring replicas are not part of either measurement
    gc.collect()
    gc.freeze()  # what a node does after loading its replica: long-lived objects
    with tempfile.TemporaryDirectory(prefix="gm-bench-") as tmp:
        base = Path(tmp)
        t_raw = _timed(lambda: raw_pipeline(raws, base / "raw.sqlite3", batch, synchronous))
        t_store = _timed(
            lambda: store_ingest(kb.genesis, raws, base / "kb.sqlite3", batch, synchronous)
        )
        t_reopen = _timed(lambda: Store.open(base / "kb.sqlite3").close())
    ours, limit = len(raws) / t_store, len(raws) / t_raw
    return result(
        "ingest",
        ours,
        "ops/s",
        limit,
        ">= 0.7",
        ops=len(raws),
        batch=batch,
        synchronous=synchronous,
        raw_pipeline_s=round(t_raw, 3),
        store_s=round(t_store, 3),
        reopen_s=round(t_reopen, 3),
        machine=machine(),
    )
