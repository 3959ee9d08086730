"""The record of rejected ops is bounded: junk from strangers cannot grow memory
without limit, and forgetting a rejected op changes no state."""

from __future__ import annotations

from gossipmind.core import ops as opsmod
from gossipmind.core.identity import Identity
from gossipmind.core.replica import DEFAULT_MAX_REJECTED, Replica
from gossipmind.core.snapshot import snapshot
from gossipmind.testing import KB, sample_report


def strangers_ops(kb: KB, n: int) -> list[opsmod.Op]:
    """Validly signed reports by keys nobody granted: each is rejected (not_member)."""
    r = kb.replica("admin")
    heads = sorted(r.heads)
    return [
        opsmod.create(
            Identity(i.to_bytes(32, "big")),
            net=kb.net,
            kind="pattern.report",
            seq=1,
            lamport=1 + max(r.meta[h].lamport for h in heads),
            deps=heads,
            ts=i,
            body=sample_report(template=f"junk {i} <*>"),
        )
        for i in range(1, n + 1)
    ]


def test_the_oldest_rejections_are_forgotten_past_the_limit() -> None:
    kb = KB(seed=4)
    kb.report("admin")
    r = Replica(kb.genesis, max_rejected=10)
    for op in kb.ops[1:]:
        r.ingest(op)
    junk = strangers_ops(kb, 50)
    codes = [code for op in junk for _, code, _ in r.ingest(op).rejected]
    assert codes == ["not_member"] * 50
    assert len(r.rejected) == 10
    assert list(r.rejected) == [op.id for op in junk[-10:]]
    r.rejected.setdefault(b"\x01" * 32, ("x", "y"))  # the store's path is bounded too
    assert len(r.rejected) == 10
    assert DEFAULT_MAX_REJECTED >= 100_000


def test_forgetting_a_rejected_op_changes_no_state() -> None:
    kb = KB(seed=4)
    kb.report("admin")
    small, large = Replica(kb.genesis, max_rejected=1), Replica(kb.genesis)
    for r in (small, large):
        for op in kb.ops[1:]:
            r.ingest(op)
    first, *rest = strangers_ops(kb, 5)
    child = opsmod.create(  # depends on a rejected op
        Identity(b"\x09" * 32),
        net=kb.net,
        kind="pattern.report",
        seq=1,
        lamport=first.lamport + 1,
        deps=[first.id],
        ts=1,
        body=sample_report(template="child <*>"),
    )
    for op in [first, *rest, child, first]:  # `first` comes back once forgotten
        small.ingest(op)
        large.ingest(op)
    assert child.id in large.rejected  # invalid_dep where it is remembered...
    assert child.id in small.pending or child.id in small.rejected  # ...never applied here
    assert small.root() == large.root()
    assert snapshot(small) == snapshot(large)
