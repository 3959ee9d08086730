"""The verifier loop against hostile proposals: bogus figures published first for a
predictable recipe, malformed fault models, and judging that raises."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from gossipmind.core.errors import StoreError
from gossipmind.core.schema import fix_id
from gossipmind.core.snapshot import fix_row, pattern_row
from gossipmind.learn.simulator import FaultModel
from gossipmind.learn.synth import propose_body, synthesize
from gossipmind.node import learner as learner_mod
from gossipmind.node import verifier as verifier_mod
from gossipmind.node.learner import Learner
from gossipmind.node.verifier import Verifier
from gossipmind.testing.kb import KB, sample_recipe

BOGUS = {"runs": 200, "success_bp": 1, "baseline_success_bp": 0}
BOGUS.update({"amplification_pm": 1000, "added_latency_ms": 0})


def network() -> KB:
    kb = KB(seed=3)
    for n in ("mal", "a1", "a2"):
        kb.grant("admin", n, "member")
    kb.grant("admin", "ver", "verifier", tier=1)
    for n in ("mal", "a1", "a2", "ver"):
        kb.sync("admin", n)
    kb.report("a1", error_class="timeout", latency_ms=3000)
    kb.report("a2", error_class="timeout", latency_ms=3000)
    kb.sync("a1", "mal")
    kb.sync("a2", "mal")
    return kb


def front_run(kb: KB, model: Any) -> bytes:
    """`mal` proposes exactly the recipe honest learners would, first, with bogus figures."""
    mal = kb.replica("mal")
    pid, p = next(iter(mal.fold.patterns.items()))
    cand = synthesize(pattern_row(p, mal.policy.synthesis_threshold), mal.policy).candidates[0]
    kb.write("mal", "fix.propose", propose_body(cand, pid, {**BOGUS, "model": model}))
    for src in ("mal", "a1", "a2"):
        kb.sync(src, "ver")
        kb.sync(src, "admin")
    return fix_id(pid, cand.recipe)


def verifier(kb: KB) -> Verifier:
    async def write(kind: str, body: dict[str, Any]) -> None:
        kb.write("ver", kind, body)

    return Verifier(kb.replica("ver"), kb.key("ver"), write, tick_s=0.01)


@pytest.mark.parametrize(
    "model",
    [
        "pattern",  # the right model, made-up figures
        {"failure_bp": 5},  # malformed: used to crash the verifier loop (TypeError)
        {"failure_bp": {"validation": 9000, "timeout": 1000}},  # chosen to make it look bad
    ],
    ids=["bogus-figures", "malformed-model", "hostile-model"],
)
async def test_a_front_run_proposal_cannot_get_the_network_s_fix_rejected(model: Any) -> None:
    kb = network()
    if model == "pattern":
        mal = kb.replica("mal")
        row = pattern_row(next(iter(mal.fold.patterns.values())), mal.policy.synthesis_threshold)
        model = FaultModel.from_pattern(row).to_body()
    fid = front_run(kb, model)
    v = verifier(kb)
    with trio.move_on_after(2):
        while v.stats.checked == 0:
            await trio.sleep(0.01)
            for row in v.pending():
                await v.judge(row)
    assert v.stats.accepted == 1 and v.stats.rejected == 0 and v.stats.errors == 0
    kb.sync("ver", "admin")
    admin = kb.replica("admin")
    got = fix_row(admin, admin.fold.fixes[fid])
    assert got is not None and got["status"] == "accepted"
    assert got["attestations"][0]["evidence"]["published_drill"] != "reproduced"
    # and honest learners, seeing it accepted, do not need to re-propose it
    proposals: list[str] = []

    async def lwrite(kind: str, body: dict[str, Any]) -> None:
        proposals.append(kind)

    await Learner(admin, lwrite, idle_s=0, cpu_budget=1.0).round()
    assert proposals == []


async def test_the_loop_survives_a_fix_whose_judging_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected exception while judging one fix skips that fix (logged, counted);
    it used to end the verifier task, and with it the node."""
    kb = network()
    first = front_run(kb, FaultModel().to_body())
    real = verifier_mod.judge
    calls: list[bytes] = []

    def flaky(row: dict[str, Any], *args: Any) -> Any:
        calls.append(row["fix"])
        if row["fix"] == first:
            raise TypeError("boom")
        return real(row, *args)

    monkeypatch.setattr(verifier_mod, "judge", flaky)
    v = verifier(kb)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(v.run)
        with trio.fail_after(5):
            while v.stats.errors == 0:
                await trio.sleep(0.01)
        await trio.sleep(0.1)  # many ticks: the failed fix is not retried every tick
        # a second fix proposed later is still judged
        pid = next(iter(kb.replica("a1").fold.patterns))
        kb.propose("a1", pid, sample_recipe("search.query", attempts=4))
        kb.sync("a1", "ver")
        with trio.fail_after(5):
            while v.stats.checked == 0:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert v.stats.errors == 1 and calls.count(first) == 1
    assert v.stats.checked == 1


async def test_a_learner_whose_proposal_failed_tries_the_pattern_again() -> None:
    kb = network()
    proposals: list[str] = []
    fail = [StoreError("database is locked")]

    async def lwrite(kind: str, body: dict[str, Any]) -> None:
        if fail:
            raise fail.pop()
        proposals.append(kind)

    learner = Learner(kb.replica("a1"), lwrite, idle_s=0, cpu_budget=1.0)
    kb.sync("a2", "a1")
    assert await learner.round() == 0 and learner.due()  # not marked done
    assert await learner.round() >= 1 and proposals[0] == "fix.propose"
    assert not learner.due()


async def test_the_learner_lists_only_its_latest_proposals(monkeypatch: pytest.MonkeyPatch) -> None:
    kb = network()
    for op in ("lookup", "index", "suggest"):
        for who in ("a1", "a2"):
            kb.report(who, operation=op, error_class="timeout", latency_ms=3000)
    kb.sync("a2", "a1")
    monkeypatch.setattr(learner_mod, "MAX_LISTED", 2)

    async def lwrite(kind: str, body: dict[str, Any]) -> None:
        kb.write("a1", kind, body)

    learner = Learner(kb.replica("a1"), lwrite, idle_s=0, cpu_budget=1.0)
    assert await learner.round() >= 4
    assert learner.stats.proposed >= 4 and len(learner.stats.proposals) == 2
