"""The turns of node/learner.py on in-memory replicas, in virtual time: the order
(``proposer_rank``) and what a node does when its turn comes."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from gossipmind.core.schema import pattern_id
from gossipmind.node.learner import PROPOSE_WAIT_S, STALE_MS, Learner, proposer_rank
from gossipmind.testing import KB
from gossipmind.testing.kb import sample_recipe

MAIN = "request timed out after <*> ms"
PATTERN = pattern_id("search", "query", "timeout", MAIN)
NAMES = ("admin", "a", "b", "c", "d")


def four_reporters() -> KB:
    """a, b, c and d reported the pattern; the admin did not (it granted them)."""
    kb = KB(seed=9)
    for name in NAMES[1:]:
        kb.grant("admin", name, "member")
        kb.replica(name)
    kb.sync_all()
    for name in NAMES[1:]:
        kb.report(name, template=MAIN)
    kb.sync_all()
    return kb


def ranks(kb: KB, on: str) -> dict[str, int]:
    r = kb.replica(on)
    return {n: proposer_rank(r, PATTERN, kb.key(n)) for n in NAMES}


def test_the_order_is_idle_members_then_reporters_then_members_not_seen_for_an_hour() -> None:
    kb = KB(seed=3)
    for name in ("a", "b", "c", "d", "s"):
        kb.grant("admin", name, "member")
        kb.replica(name)
    kb.sync_all()
    kb.ts += 2 * STALE_MS  # two hours later
    kb.report("c", template="another request failed")  # c is alive, did not report MAIN
    kb.report("a", template=MAIN)
    kb.report("b", template=MAIN)
    kb.sync_all()
    seen = [ranks(kb, n) for n in ("admin", "a", "c")]
    assert seen[0] == seen[1] == seen[2]  # every replica with the same ops agrees
    got = seen[0] | {"s": proposer_rank(kb.replica("a"), PATTERN, kb.key("s"))}
    assert sorted(got.values()) == list(range(6))  # one node per turn
    assert got["c"] == 0  # a member not seen busy with the pattern comes first
    assert {got["a"], got["b"]} == {1, 2}  # then its reporters
    assert {got["admin"], got["d"], got["s"]} == {3, 4, 5}  # nothing for two hours: last


async def test_a_later_turn_waits_then_finds_the_fix_proposed_and_does_not_drill(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kb = four_reporters()
    order = sorted(NAMES, key=lambda n: ranks(kb, "a")[n])
    first, second = order[0], order[1]

    def writer(name: str) -> Any:
        async def write(kind: str, body: dict[str, Any]) -> None:
            kb.write(name, kind, body)

        return write

    learners = {
        n: Learner(kb.replica(n), writer(n), idle_s=0.0, cpu_budget=1.0, me=kb.key(n))
        for n in (first, second)
    }
    assert await learners[second].round() == 0  # not its turn: nothing synthesized
    st = learners[second].stats
    assert (st.waiting_turn, st.synthesized, st.drilled) == (1, 0, 0)
    assert await learners[first].round() >= 1  # the first proposes at once
    kb.sync(first, second)
    await trio.sleep(PROPOSE_WAIT_S / 2)
    assert await learners[second].round() == 0 and st.waiting_turn == 1  # still waiting
    await trio.sleep(PROPOSE_WAIT_S)
    assert await learners[second].round() == 0  # its turn: the fix is there already
    assert (st.waiting_turn, st.drilled, st.proposed) == (0, 0, 0)
    assert st.skipped_proposed == st.synthesized >= 1
    assert learners[second].due() == []  # done with the pattern


async def test_a_later_turn_proposes_when_the_earlier_nodes_did_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kb = four_reporters()
    order = sorted(NAMES, key=lambda n: ranks(kb, "a")[n])
    last = order[-1]
    written: list[str] = []

    async def write(kind: str, body: dict[str, Any]) -> None:
        written.append(kind)

    learner = Learner(kb.replica(last), write, idle_s=0.0, cpu_budget=1.0, me=kb.key(last))
    rounds = 0
    with trio.fail_after(60):
        while not written:
            await learner.round()
            rounds += 1
            await trio.sleep(learner.tick_s)
    # four nodes came first and none proposed: it waited its capped turn, then proposed
    assert written[0] == "fix.propose" and learner.stats.proposed >= 1
    assert rounds * learner.tick_s >= 4 * PROPOSE_WAIT_S


def test_keys_that_never_proposed_come_after_those_that_did() -> None:
    """The review of 28 November: admins' and people's keys run no learner, and
    each took a turn ahead of the learners; four of them put every node at the
    capped wait, so all proposed at once again. Keys seen proposing come first."""
    kb = KB(seed=5)
    quiet = ("r1", "r2", "r3", "r4", "r5")  # alive (granted now), never propose
    learners = ("l1", "l2", "l3")
    for name in (*quiet, *learners):
        kb.grant("admin", name, "member")
        kb.replica(name)
    kb.sync_all()
    other = pattern_id("search", "query", "timeout", "another")
    for name in learners:  # each proposed a fix for another pattern once
        kb.report(name, template="another")
        kb.propose(name, other, sample_recipe("search.query", idempotent=True))
    kb.report("l3", template=MAIN)  # l3 reported this one: its agent was busy
    kb.sync_all()
    everyone = ("admin", *quiet, *learners)
    on = [kb.replica(n) for n in ("admin", "l1", "r2")]
    got = [{n: proposer_rank(r, PATTERN, kb.key(n)) for n in everyone} for r in on]
    assert got[0] == got[1] == got[2]
    ranks = got[0]
    assert sorted(ranks.values()) == list(range(len(everyone)))
    assert {ranks["l1"], ranks["l2"]} == {0, 1} and ranks["l3"] == 2
    assert all(ranks[n] > 2 for n in ("admin", *quiet))
