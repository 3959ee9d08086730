"""The pending buffer holds ops encoded: its byte bound is close to the memory it holds,
and what it releases is the op that was parked."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from gossipmind.core import ops as opsmod
from gossipmind.core.dag import DEP_COST, Pending, cost
from gossipmind.core.identity import Identity
from gossipmind.testing import sample_report

NET = bytes(32)
ALICE = Identity(bytes([7]) * 32)


def report(seq: int, deps: list[bytes]) -> opsmod.Op:
    body = sample_report(template=f"pending {seq} <*>", count=1 + seq % 5)
    return opsmod.create(
        ALICE,
        net=NET,
        kind="pattern.report",
        seq=seq,
        lamport=seq + 1,
        deps=deps,
        ts=seq,
        body=body,
    )


def parked_memory(raws: list[bytes]) -> tuple[float, Pending]:
    """Bytes of memory held per op once ``raws`` are parked, as ingest parks them."""
    pending = Pending()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for raw in raws:  # a freshly decoded op, referenced by nothing else
            op = opsmod.decode(raw)
            pending.add(op, set(op.deps))
            del op
        return (tracemalloc.get_traced_memory()[0] - before) / len(raws), pending
    finally:
        tracemalloc.stop()


def test_a_parked_op_costs_little_more_than_its_encoding() -> None:
    raws = [report(seq, [seq.to_bytes(32, "big")]).raw for seq in range(1, 2001)]
    encoded = sum(map(len, raws)) / len(raws)
    per_op, pending = parked_memory(raws)
    # the entry, its set of missing deps and the index by dep: well under 1 KiB
    # beside the encoding (a decoded op alone would cost several times its encoding)
    assert per_op < encoded + 1024, (per_op, encoded)
    assert pending.bytes == sum(cost(len(raw), 1) for raw in raws)


@pytest.mark.parametrize("deps", [1, 8, 64])
def test_the_byte_bound_bounds_memory_whatever_the_deps(deps: int) -> None:
    """An op naming many deps that exist nowhere holds ~10x its encoding in indexes:
    the bound counts that, so a full buffer holds at most its byte bound."""
    rng = random.Random(deps)
    raws = [report(seq, [rng.randbytes(32) for _ in range(deps)]).raw for seq in range(1, 1001)]
    per_op, pending = parked_memory(raws)
    accounted = pending.bytes / len(raws)
    assert per_op <= accounted, (per_op, accounted)
    assert accounted >= sum(map(len, raws)) / len(raws) + DEP_COST * deps


def test_released_ops_are_the_parked_ones() -> None:
    a, b = bytes([1]) * 32, bytes([2]) * 32
    first = report(1, [a, b])
    second = report(2, [a])
    pending = Pending()
    pending.add(first, {a, b})
    pending.add(second, {a})
    assert pending.raw(first.id) == first.raw and pending.raw(bytes(32)) is None
    assert sorted(pending.seqs_of(ALICE.public)) == [1, 2]
    assert pending.seqs_of(Identity(bytes([9]) * 32).public) == []
    assert pending.missing() == {a, b}
    assert pending.bytes == cost(len(first.raw), 2) + cost(len(second.raw), 1)
    assert [op.id for op in pending.resolved(a)] == [second.id]  # first still waits for b
    assert pending.bytes == cost(len(first.raw), 1)
    (released,) = pending.resolved(b)
    assert released == first and released.raw == first.raw
    assert len(pending) == 0 and pending.bytes == 0 and not pending.waiting_on
    assert pending.seqs_of(ALICE.public) == []


def test_ops_decoded_again_without_checks_equal_the_checked_decode() -> None:
    """What the buffer releases is rebuilt without the checks: for every kind of op
    it must be the op ``decode`` gave (a history with grants, reports, fixes,
    attestations)."""
    from gossipmind.bench.ingest import build_ops

    history = build_ops(1500, authors=4)
    kinds = {op.kind for op in history.ops}
    assert {"net.genesis", "member.grant", "pattern.report", "fix.propose", "fix.attest"} <= kinds
    for op in history.ops:
        assert opsmod.decode_checked_before(op.raw) == opsmod.decode(op.raw) == op


def test_eviction_and_dropping() -> None:
    a = bytes([1]) * 32
    ops = [report(seq, [a]) for seq in range(1, 6)]
    pending = Pending(max_ops=3)
    evicted = [i for op in ops for i in pending.add(op, {a})]
    assert evicted == [ops[0].id, ops[1].id] and pending.evicted == 2
    assert pending.bytes == sum(cost(len(op.raw), 1) for op in ops[2:])
    assert sorted(pending.seqs_of(ALICE.public)) == [3, 4, 5]
    assert [op.id for op in pending.dropped(a)] == sorted(op.id for op in ops[2:])
    assert len(pending) == 0 and pending.bytes == 0 and not pending.waiting_on
    assert pending.seqs_of(ALICE.public) == []
