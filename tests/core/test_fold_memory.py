"""What a held op costs in memory: the fold records an op's bytes, not its decoded
body (a report's body held ~1.1 KB as Python objects, twice its bytes)."""

from __future__ import annotations

import gc
import random
import tracemalloc

import pytest

from gossipmind.core import ops as opsmod
from gossipmind.core.fold import record_body
from gossipmind.core.replica import Replica
from gossipmind.testing import KB, sample_report
from gossipmind.testing.kb import History

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
    # measured: its bytes (~440) + ~470 (meta, its id, sets, an entry in its author's
    # chain); copies of the author, deps and kind in each meta held ~190 more, an
    # (author, seq) -> [ids] index ~170 more, a decoded body ~660 more
    assert per_op < raw_size + 600, f"{per_op:.0f} B per held op ({raw_size:.0f} B of bytes)"


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


def test_metas_share_one_object_per_author_dep_and_kind() -> None:
    kb, _ = _reports()
    r = Replica(kb.genesis)
    for op in kb.ops[1:]:
        r.ingest(opsmod.decode(bytes(bytearray(op.raw))), verified=True)  # fresh copies
    metas = list(r.meta.values())
    assert len({id(m.author) for m in metas if m.author == kb.key("agent")}) == 1
    assert len({id(m.kind) for m in metas if m.kind == "pattern.report"}) == 1
    assert all(d is r.meta[d].id for m in metas for d in m.deps)


def test_an_authors_ops_by_seq_forks_included() -> None:
    """``Replica.ops_at`` (an author's chain, one entry per seq, forks kept aside
    in ``equivocations``) answers what the (author, seq) -> [ids] index did."""
    kb = KB(seed=8)
    kb.grant("admin", "agent", "member")
    kb.sync("admin", "agent")
    first = [kb.report("agent", template=f"t {i} <*>") for i in range(3)]
    fork = kb.forge("agent", "pattern.report", sample_report(template="fork <*>"), seq=2)
    again = kb.forge("agent", "pattern.report", sample_report(template="fork 2 <*>"), seq=2)
    r = Replica(kb.genesis)
    for op in kb.ops[1:]:
        r.ingest(op, verified=True)
    agent = kb.key("agent")
    assert r.ops_at(agent, 1) == [first[0].id]
    assert r.ops_at(agent, 2) == sorted([first[1].id, fork.id, again.id])
    assert r.ops_at(agent, 3) == [first[2].id]
    assert r.ops_at(agent, 4) == [] and r.ops_at(agent, 0) == [] and r.ops_at(b"x" * 32, 1) == []
    assert r.equivocations == {(agent, 2): sorted([first[1].id, fork.id, again.id])}
    assert agent in r.membership.equivocators
    assert r.ops_at(kb.genesis.author, 1)[0] == kb.genesis.id


@pytest.mark.parametrize("seed", range(12))
def test_ops_at_matches_the_applied_ops_in_random_histories_with_forks(seed: int) -> None:
    """Random histories (forks included: ``History`` forges them), delivered in a
    shuffled order: for every (author, seq) an applied op holds, ``ops_at`` gives
    exactly the sorted ids of the applied ops there, and forks are exactly the
    (author, seq) pairs holding two or more."""
    h = History(seed, steps=120)
    ops = list(h.kb.ops[1:])
    random.Random(seed).shuffle(ops)
    r = Replica(h.kb.genesis)
    for op in ops:
        r.ingest(op, verified=True)
    by_key: dict[tuple[bytes, int], list[bytes]] = {}
    for m in r.meta.values():
        by_key.setdefault((m.author, m.seq), []).append(m.id)
    for (author, seq), ids in by_key.items():
        assert r.ops_at(author, seq) == sorted(ids)
        assert r.ops_at(author, seq + 1) == sorted(by_key.get((author, seq + 1), []))
    assert r.equivocations == {k: sorted(v) for k, v in by_key.items() if len(v) > 1}
