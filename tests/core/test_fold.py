"""Fold semantics: membership, revocation, quorum, outcomes, goals, equivocation."""

from __future__ import annotations

import itertools

import pytest

from gossipmind.core.ops import Op
from gossipmind.core.policy import Policy, Quorum
from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import snapshot
from gossipmind.testing import KB, sample_recipe, sample_report


def deliver(kb: KB, ops: list[Op] | None = None) -> Replica:
    r = Replica(kb.genesis)
    for op in ops if ops is not None else kb.ops[1:]:
        r.ingest(op)
    return r


def fix_state(r: Replica, fix: bytes) -> dict[str, object]:
    return next(f for f in snapshot(r)["fixes"] if f["fix"] == fix)


def setup_fix(kb: KB, scope: str = "search", risk: str = "low", **recipe_kw: object) -> bytes:
    """A fix for the `scope`.query pattern, reported: a fix has its pattern's scope."""
    kb.grant("admin", "agent", "member")
    kb.sync("admin", "agent")
    pattern = kb.report("agent", service=scope).body["pattern"]
    recipe = sample_recipe(f"{scope}.query", **recipe_kw)  # type: ignore[arg-type]
    fix = kb.propose("agent", pattern, recipe, risk)
    return fix


def verifiers(kb: KB, *specs: tuple[str, int, str]) -> None:
    for name, tier, scope in specs:
        kb.grant("admin", name, "verifier", tier=tier, scopes=(scope,))
    for name, _, _ in specs:
        kb.sync("admin", name)
        kb.sync("agent", name)


def attest(kb: KB, who: str, fix: bytes, verdict: str = "accept", scope: str = "search") -> Op:
    return kb.write(who, "fix.attest", kb.attest_body(fix, scope, verdict))


def test_low_risk_needs_one_tier1_accept() -> None:
    kb = KB()
    fix = setup_fix(kb)
    verifiers(kb, ("v1", 1, "search"))
    assert fix_state(deliver(kb), fix)["status"] == "proposed"
    attest(kb, "v1", fix)
    st = fix_state(deliver(kb), fix)
    assert st["status"] == "accepted"
    assert st["risk"] == "low"


def test_medium_risk_needs_two_including_a_tier2() -> None:
    kb = KB()
    fix = setup_fix(kb, risk="medium")
    verifiers(kb, ("v1", 1, "search"), ("v1b", 1, "search"), ("v2", 2, "search"))
    attest(kb, "v1", fix)
    attest(kb, "v1b", fix)
    assert fix_state(deliver(kb), fix)["status"] == "proposed"  # two, but no tier 2
    attest(kb, "v2", fix)
    assert fix_state(deliver(kb), fix)["status"] == "accepted"


def test_high_risk_needs_a_tier3_person() -> None:
    kb = KB()
    fix = setup_fix(kb, risk="high")
    verifiers(kb, ("v1", 1, "search"), ("v2", 2, "search"), ("human", 3, "search"))
    attest(kb, "v1", fix)
    attest(kb, "v2", fix)
    assert fix_state(deliver(kb), fix)["status"] == "proposed"
    attest(kb, "human", fix)
    assert fix_state(deliver(kb), fix)["status"] == "accepted"


def test_risk_floor_comes_from_policy_not_from_the_proposer() -> None:
    kb = KB()
    # payments is a non-idempotent scope: a retry without an idempotency key is high risk
    fix = setup_fix(kb, scope="payments", risk="low")
    verifiers(kb, ("v1", 1, "payments"), ("v2", 2, "payments"))
    attest(kb, "v1", fix, scope="payments")
    attest(kb, "v2", fix, scope="payments")
    st = fix_state(deliver(kb), fix)
    assert st["risk"] == "high"
    assert st["status"] == "proposed"


def test_policy_quorum_is_configurable() -> None:
    policy = Policy(quorum={"low": Quorum(2, 1), "medium": Quorum(2, 2), "high": Quorum(1, 3)})
    kb = KB(policy=policy)
    fix = setup_fix(kb)
    verifiers(kb, ("v1", 1, "search"), ("v1b", 1, "search"))
    attest(kb, "v1", fix)
    assert fix_state(deliver(kb), fix)["status"] == "proposed"
    attest(kb, "v1b", fix)
    assert fix_state(deliver(kb), fix)["status"] == "accepted"


def test_reject_of_equal_or_higher_tier_overrides_accepts() -> None:
    kb = KB()
    fix = setup_fix(kb)
    verifiers(kb, ("v1", 1, "search"), ("v1b", 1, "search"), ("v2", 2, "search"))
    attest(kb, "v1", fix)
    attest(kb, "v1b", fix, "reject")
    assert fix_state(deliver(kb), fix)["status"] == "rejected"
    attest(kb, "v2", fix)  # a higher tier accept outranks the tier-1 reject
    assert fix_state(deliver(kb), fix)["status"] == "accepted"


def test_a_verifiers_latest_verdict_counts() -> None:
    kb = KB()
    fix = setup_fix(kb)
    verifiers(kb, ("v1", 1, "search"))
    attest(kb, "v1", fix, "reject")
    attest(kb, "v1", fix, "accept")
    assert fix_state(deliver(kb), fix)["status"] == "accepted"


def test_identical_proposals_merge_by_fix_id() -> None:
    kb = KB()
    fix = setup_fix(kb)
    kb.grant("admin", "agent2", "member")
    kb.sync("admin", "agent2")
    pattern = sample_report()["pattern"]
    assert kb.propose("agent2", pattern, sample_recipe("search.query"), "low") == fix
    r = deliver(kb)
    rows = [f for f in snapshot(r)["fixes"]]
    assert len(rows) == 1
    assert len(rows[0]["proposers"]) == 2


def test_revoked_verifiers_later_attestations_are_ignored() -> None:
    kb = KB()
    fix = setup_fix(kb)
    verifiers(kb, ("v1", 1, "search"))
    kb.revoke("admin", "v1")  # v1 has not seen it: its attestation is concurrent
    attest(kb, "v1", fix)
    r = deliver(kb)
    assert fix_state(r, fix)["status"] == "proposed"
    assert next(m for m in snapshot(r)["members"] if m["key"] == kb.key("v1"))["revoked"] == "plain"


def test_plain_revoke_keeps_earlier_attestations() -> None:
    kb = KB()
    fix = setup_fix(kb)
    verifiers(kb, ("v1", 1, "search"))
    attest(kb, "v1", fix)
    kb.sync("v1", "admin")
    kb.revoke("admin", "v1")
    assert fix_state(deliver(kb), fix)["status"] == "accepted"


def test_retroactive_revoke_voids_every_op_of_the_key() -> None:
    kb = KB()
    fix = setup_fix(kb)
    verifiers(kb, ("v1", 1, "search"))
    attest(kb, "v1", fix)
    kb.write("v1", "pattern.report", sample_report(count=7))
    kb.sync("v1", "admin")
    kb.revoke("admin", "v1", retroactive=True)
    r = deliver(kb)
    assert fix_state(r, fix)["status"] == "proposed"
    assert all(p["count"] != 7 for p in snapshot(r)["patterns"])


def test_retroactive_revoke_of_an_admin_voids_its_grants() -> None:
    kb = KB()
    kb.grant("admin", "sub", "admin")
    kb.sync("admin", "sub")
    kb.grant("sub", "mallory", "verifier", tier=1, scopes=("search",))
    kb.grant("admin", "agent", "member")
    kb.sync("admin", "agent")
    pattern = kb.report("agent").body["pattern"]
    fix = kb.propose("agent", pattern, sample_recipe("search.query"), "low")
    kb.sync("sub", "mallory")
    kb.sync("agent", "mallory")
    attest(kb, "mallory", fix)
    assert fix_state(deliver(kb), fix)["status"] == "accepted"
    kb.sync("mallory", "admin")
    kb.revoke("admin", "sub", retroactive=True)
    r = deliver(kb)
    assert fix_state(r, fix)["status"] == "proposed"
    mallory = [m for m in snapshot(r)["members"] if m["key"] == kb.key("mallory")]
    assert not mallory or not mallory[0]["roles"]


def test_a_revoked_admin_s_own_revokes_are_void() -> None:
    """A compromised admin revokes a member; once the admin is retroactively
    revoked, its revoke is void like everything it signed: the member is back,
    in every delivery order."""
    kb = KB()
    kb.grant("admin", "sub", "admin")
    kb.grant("admin", "agent", "member")
    kb.sync("admin", "sub")
    kb.sync("admin", "agent")
    report = kb.write("agent", "pattern.report", sample_report(count=3))
    kb.sync("agent", "sub")
    bad = kb.revoke("sub", "agent", retroactive=True)
    kb.sync("sub", "admin")
    assert not deliver(kb).meta[report.id].effective  # the attack worked, for now
    kb.revoke("admin", "sub", retroactive=True)
    for order in itertools.permutations(kb.ops[1:]):  # 5 ops: all 120 orders
        r = deliver(kb, list(order))
        assert bad.id not in r.membership.effective_revokes
        assert r.meta[report.id].effective
        agent = next(m for m in snapshot(r)["members"] if m["key"] == kb.key("agent"))
        assert agent["roles"] == ["member"]
        assert [p["count"] for p in snapshot(r)["patterns"]] == [3]


def test_of_two_admins_revoking_each_other_the_earlier_revoke_wins() -> None:
    kb = KB()
    kb.grant("admin", "a", "admin")
    kb.grant("admin", "b", "admin")
    kb.sync("admin", "a")
    kb.sync("admin", "b")
    first = kb.revoke("a", "b", retroactive=True)
    second = kb.revoke("b", "a", retroactive=True)
    assert (first.lamport, first.id) < (second.lamport, second.id)
    for order in (kb.ops[1:], kb.ops[:0:-1]):
        r = deliver(kb, list(order))
        assert r.membership.effective_revokes == {first.id}
        assert r.membership.voided(kb.key("b"), 1) and not r.membership.voided(kb.key("a"), 1)


def test_outcomes_are_g_counters_per_author() -> None:
    kb = KB()
    fix = setup_fix(kb)
    for attempts, successes in ((3, 2), (5, 5)):
        body = {"fix": fix, "attempts": attempts, "successes": successes, "window": [0, 1]}
        kb.write("agent", "fix.outcome", body)
    st = fix_state(deliver(kb), fix)
    assert (st["attempts"], st["successes"], st["outcome_reporters"]) == (8, 7, 1)


def test_pattern_counts_use_distinct_reporters_and_caps() -> None:
    kb = KB(policy=Policy(report_cap=100))
    for name in ("a", "b"):
        kb.grant("admin", name, "member")
        kb.sync("admin", name)
    kb.report("a", count=5)
    kb.report("a", count=500)  # capped at 100
    kb.report("b", count=1)
    row = snapshot(deliver(kb))["patterns"][0]
    assert (row["count"], row["reporters"]) == (106, 2)
    assert row["over_threshold"]


def test_fix_revoke_is_a_tombstone() -> None:
    kb = KB()
    fix = setup_fix(kb)
    verifiers(kb, ("v1", 1, "search"), ("v2", 2, "search"))
    attest(kb, "v1", fix)
    kb.write("v2", "fix.revoke", {"fix": fix, "scope": "search", "reason": "outcomes fell"})
    attest(kb, "v1", fix)
    assert fix_state(deliver(kb), fix)["status"] == "revoked"


def _goal(kb: KB, who: str, **kw: object) -> Op:
    body = {
        "title": "cap retries",
        "scope": "payments",
        "priority": 1,
        "retired": False,
        "constraints": [{"op": "<=", "field": "retry.max_attempts", "value": 2}],
    }
    body.update(kw)
    return kb.write(who, "goal.set", body)


def test_goal_activation_needs_a_reviewer_other_than_the_owner() -> None:
    kb = KB()
    kb.grant("admin", "owner", "member")
    verifiers(kb, ("rev", 2, "*"))
    kb.sync("admin", "owner")
    g = _goal(kb, "owner")
    kb.sync("owner", "rev")
    goal = snapshot(deliver(kb))["goals"][0]
    assert not goal["active"]
    kb.write(
        "rev", "goal.review", {"goal": g.id, "version": g.id, "verdict": "approve", "comment": "ok"}
    )
    goal = snapshot(deliver(kb))["goals"][0]
    assert goal["active"]


def test_owner_cannot_approve_own_goal() -> None:
    kb = KB()
    g = _goal(kb, "admin")  # the admin owns it and could review others' goals
    kb.write(
        "admin", "goal.review", {"goal": g.id, "version": g.id, "verdict": "approve", "comment": ""}
    )
    assert not snapshot(deliver(kb))["goals"][0]["active"]


def test_only_the_owner_updates_a_goal_last_writer_wins() -> None:
    kb = KB()
    kb.grant("admin", "owner", "member")
    kb.grant("admin", "other", "member")
    kb.sync("admin", "owner")
    kb.sync("admin", "other")
    g = _goal(kb, "owner")
    kb.sync("owner", "other")
    _goal(kb, "other", goal=g.id, priority=999)  # not the owner: ignored
    _goal(kb, "owner", goal=g.id, priority=7)
    goal = snapshot(deliver(kb))["goals"][0]
    assert goal["priority"] == 7
    assert goal["owner"] == kb.key("owner")


@pytest.mark.parametrize("order", list(itertools.permutations(range(2))))
def test_equivocation_is_kept_flagged_and_order_independent(order: tuple[int, ...]) -> None:
    kb = KB()
    kb.grant("admin", "agent", "member")
    kb.sync("admin", "agent")
    kb.report("agent", count=1)
    first = kb.write("agent", "pattern.report", sample_report(count=2))
    fork = kb.forge("agent", "pattern.report", sample_report(count=3), seq=first.seq)
    assert fork.seq == first.seq and fork.id != first.id
    base = kb.ops[1:-2]
    pair = [first, fork]
    r = deliver(kb, base + [pair[i] for i in order])
    snap = snapshot(r)
    assert first.id in r.meta and fork.id in r.meta  # both kept as evidence
    assert snap["equivocations"] == [[kb.key("agent"), first.seq, sorted([first.id, fork.id])]]
    agent = next(m for m in snap["members"] if m["key"] == kb.key("agent"))
    assert agent["equivocating"]
    assert snap["patterns"][0]["count"] == 0  # an equivocator's reports count for nothing
    other = deliver(kb, base + [pair[1 - i] for i in order])
    assert snapshot(other) == snap


@pytest.mark.parametrize("retroactive", [False, True])
def test_a_key_can_revoke_itself(retroactive: bool) -> None:
    """An owner who lost a key revokes it with the key itself; that revoke
    stands (a revoke is void only when *another* revoke voids its author), and
    with --retroactive it takes the key's earlier revokes with it."""
    kb = KB()
    kb.grant("admin", "sub", "admin")
    kb.grant("admin", "agent", "member")
    kb.sync("admin", "sub")
    kb.sync("admin", "agent")
    report = kb.write("agent", "pattern.report", sample_report(count=2))
    kb.sync("agent", "sub")
    earlier = kb.revoke("sub", "agent", retroactive=True)
    own = kb.revoke("sub", "sub", retroactive=retroactive)
    for order in (kb.ops[1:], kb.ops[:0:-1]):
        r = deliver(kb, list(order))
        assert own.id in r.membership.effective_revokes
        assert r.membership.voided(kb.key("sub"), own.seq + 1)  # nothing after it counts
        sub = next(m for m in snapshot(r)["members"] if m["key"] == kb.key("sub"))
        assert sub["revoked"] == ("retroactive" if retroactive else "plain")
        # a retroactive self-revoke voids the key's earlier revoke of the agent too
        assert (earlier.id in r.membership.effective_revokes) is not retroactive
        assert r.meta[report.id].effective is retroactive
