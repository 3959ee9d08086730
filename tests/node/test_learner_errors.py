"""A learner tries a pattern again only when its proposal write failed for a reason
that may pass (the store); a proposal refused for good is not re-drilled every round."""

from __future__ import annotations

from typing import Any

import pytest
import trio.testing

from gossipmind.core.errors import InvalidOp, SchemaError, StoreError
from gossipmind.node.learner import Learner
from gossipmind.testing import KB


@pytest.fixture
def kb() -> KB:
    """Four members reported the same failure: one pattern is due for synthesis."""
    kb = KB(seed=9)
    members = ("a", "b", "c", "d")
    for name in members:
        kb.grant("admin", name, "member")
        kb.replica(name)
    kb.sync_all()
    for name in members:
        for _ in range(5):
            kb.report(name, status="504")
    kb.sync_all()
    return kb


@pytest.mark.parametrize(
    "refusal",
    [
        InvalidOp("unauthorized", "this key may not propose fixes"),
        SchemaError("recipe", "not a recipe"),
    ],
)
async def test_a_proposal_refused_for_good_is_not_drilled_again(
    kb: KB, refusal: Exception, autojump_clock: trio.testing.MockClock
) -> None:
    writes = 0

    async def write(kind: str, body: dict[str, Any]) -> None:
        nonlocal writes
        writes += 1
        raise refusal

    learner = Learner(kb.replica("admin"), write, idle_s=0.0, cpu_budget=1.0)
    await learner.round()
    drilled = learner.stats.drilled
    assert drilled == writes >= 1
    for _ in range(4):
        await learner.round()
    # it was drilled (and refused) once per candidate: not again every round
    assert learner.stats.drilled == writes == drilled and learner.due() == []
    assert learner.stats.refused == writes and learner.stats.proposed == 0
    assert str(refusal) in learner.stats.last_error


async def test_a_proposal_the_store_failed_is_tried_again_next_round(
    kb: KB, autojump_clock: trio.testing.MockClock
) -> None:
    failures = [StoreError("database is locked")]
    proposed: list[dict[str, Any]] = []

    async def write(kind: str, body: dict[str, Any]) -> None:
        if failures:
            raise failures.pop()
        proposed.append(body)

    learner = Learner(kb.replica("admin"), write, idle_s=0.0, cpu_budget=1.0)
    await learner.round()
    assert proposed == [] and len(learner.due()) == 1  # still due
    await learner.round()
    assert len(proposed) == learner.stats.proposed >= 1
    assert learner.due() == []


async def test_ops_whose_bytes_cannot_be_read_back_are_read_again_next_round(
    kb: KB, autojump_clock: trio.testing.MockClock
) -> None:
    """A store-backed fold reads the bytes of durable ops back from the file
    (core/records.py); a failed read is a round without proposals, not a crash."""
    replica = kb.replica("admin")
    proposed: list[dict[str, Any]] = []

    async def write(kind: str, body: dict[str, Any]) -> None:
        proposed.append(body)

    learner = Learner(replica, write, idle_s=0.0, cpu_budget=1.0)
    await learner.round()  # the first pattern: proposed (it read no op's bytes)
    first = len(proposed)
    assert first >= 1
    for name in ("a", "b", "c", "d"):  # a second pattern: the learner reads these ops
        for _ in range(5):
            kb.report(name, operation="index", template="connection reset by peer")
    kb.sync_all()
    records = replica.fold.records
    raws = {op.id: op.raw for op in kb.ops}
    fail = [True]

    def loader(ids: list[bytes]) -> dict[bytes, bytes]:
        if fail:
            fail.pop()
            raise StoreError("disk I/O error")
        return {i: raws[i] for i in ids}

    records.loader = loader
    records.release()  # as a store does once the ops are durable
    assert await learner.round() == 0 and len(proposed) == first
    assert "disk I/O error" in learner.stats.last_error
    await learner.round()  # the read works again: the second pattern is proposed
    assert len(proposed) > first and not fail
