"""What a held op costs in memory: the fold records an op's bytes, not its decoded
body (a report's body held ~1.1 KB as Python objects, twice its bytes)."""

from __future__ import annotations

import gc
import tracemalloc

from gossipmind.core import ops as opsmod
from gossipmind.core.fold import record_body
from gossipmind.core.replica import Replica
from gossipmind.testing import KB

N = 2000


def _reports() -> tuple[KB, list[bytes]]:
    """``N`` reports of 20 patterns (a pattern's aggregate is its own cost)."""
    kb = KB(seed=5)
    kb.grant("admin", "agent", "member")
    kb.sync("admin", "agent")
    for i in range(N):
        kb.report("agent", template=f"failure kind {i % 20} <*> after <*> ms", count=1 + i % 7)
    return kb, [op.raw for op in kb.ops[1:] if op.kind == "pattern.report"]


def test_a_held_report_costs_about_its_bytes_and_a_kilobyte() -> None:
    kb, raws = _reports()
    r = Replica(kb.genesis)
    r.ingest(kb.ops[1], verified=True)  # the grant
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for raw in raws:  # fresh bytes, as from the network
            r.ingest(opsmod.decode(bytes(bytearray(raw))), verified=True)
        gc.collect()
        per_op = (tracemalloc.get_traced_memory()[0] - base) / N
    finally:
        tracemalloc.stop()
    raw_size = sum(map(len, raws)) / N
    assert len(r.fold.records) == N
    # measured: its bytes (~440) + ~830 (meta, ids, sets); a decoded body held ~660 more
    assert per_op < raw_size + 1100, f"{per_op:.0f} B per held op ({raw_size:.0f} B of bytes)"


def test_records_give_back_each_ops_body() -> None:
    kb, raws = _reports()
    r = Replica(kb.genesis)
    r.ingest(kb.ops[1], verified=True)  # the grant
    for raw in raws:
        r.ingest(opsmod.decode(raw), verified=True)
    for (meta, raw, _), expected in zip(r.fold.records, raws, strict=True):
        assert raw == expected
        assert record_body(raw) == opsmod.decode(expected).body
        assert meta.id == opsmod.op_id(expected)
