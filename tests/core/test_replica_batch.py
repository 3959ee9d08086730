"""Replica.batch(): one membership recomputation per batch, the same state."""

from __future__ import annotations

import random

from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import snapshot
from gossipmind.testing import History


def test_a_batch_gives_the_state_of_op_by_op_ingest_with_fewer_recomputations() -> None:
    for seed in range(12):
        h = History(seed, steps=90)
        ops = h.kb.ops[1:]
        rng = random.Random(seed)
        shuffled = list(ops)
        rng.shuffle(shuffled)
        one = Replica(h.kb.genesis)
        for op in shuffled:
            one.ingest(op)
        many = Replica(h.kb.genesis)
        calls: list[int] = []

        def counted(real=many._recompute, calls=calls) -> None:  # type: ignore[no-untyped-def]
            calls.append(1)
            real()

        many._recompute = counted  # type: ignore[method-assign]
        cut = len(shuffled) // 2
        for part in (shuffled[:cut], shuffled[cut:]):
            with many.batch(), many.batch():  # nested: the outer one recomputes
                for op in part:
                    many.ingest(op)
        assert snapshot(many) == snapshot(one)
        assert sorted(many.rejected) == sorted(one.rejected)
        assert {k: m.effective for k, m in many.meta.items()} == {
            k: m.effective for k, m in one.meta.items()
        }
        assert len(calls) <= 2
