"""Goals: constraint semantics, conflicts, resolution by priority, effect on fixes."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipmind.core.goals import Goal, resolve, violation, violations
from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import snapshot
from gossipmind.testing import KB, sample_recipe, sample_report

SALES = (
    {"op": "require_step", "step": "retry"},
    {"op": ">=", "field": "retry.max_attempts", "value": 5},
)
FINANCE = (
    {"op": "require_step", "step": "idempotency_key", "when": "retry"},
    {"op": "<=", "field": "retry.max_attempts", "value": 2},
)


def test_constraint_semantics() -> None:
    r = sample_recipe("payments", attempts=3)
    assert violation(r, {"op": "<=", "field": "retry.max_attempts", "value": 2})
    assert not violation(r, {"op": ">=", "field": "retry.max_attempts", "value": 3})
    assert not violation(r, {"op": "<=", "field": "timeout.ms", "value": 10})  # no timeout: vacuous
    assert violation(r, {"op": "require_step", "step": "idempotency_key", "when": "retry"})
    assert not violation(
        sample_recipe("payments", idempotent=True),
        {"op": "require_step", "step": "idempotency_key", "when": "retry"},
    )
    assert violation(r, {"op": "forbid_step", "step": "retry"})
    assert not violation(r, {"op": "<=", "field": "budget_ms", "value": 10_000})
    fb = {"scope": "s", "steps": [{"type": "fallback", "target": "cache"}]}
    assert violation(fb, {"op": "allowed_fallbacks", "targets": ["replica"]})
    assert not violation(fb, {"op": "allowed_fallbacks", "targets": ["cache", "replica"]})


def test_sales_against_finance_is_a_conflict_resolved_by_priority() -> None:
    sales = Goal(b"\x01" * 32, "payments", 10, SALES, "sales")
    finance = Goal(b"\x02" * 32, "payments", 50, FINANCE, "finance")
    res = resolve([sales, finance])
    assert [(c.reason, c.winner) for c in res.conflicts] == [
        ("retry.max_attempts: no value satisfies both", finance.id)
    ]
    assert not res.needs_tier3("payments")
    recipe = sample_recipe("payments", attempts=2, idempotent=True)
    assert violations(recipe, [sales, finance], res) == []  # sales' bound was dropped
    five = sample_recipe("payments", attempts=5, idempotent=True)
    assert [g for g, _ in violations(five, [sales, finance], res)] == [finance.id]


def test_equal_priority_conflicts_need_a_person() -> None:
    a = Goal(b"\x01" * 32, "payments", 10, SALES, "sales")
    b = Goal(b"\x02" * 32, "payments.charge", 10, FINANCE, "finance")
    res = resolve([a, b])
    assert res.conflicts[0].winner is None and res.conflicts[0].scope == "payments.charge"
    assert res.needs_tier3("payments.charge") and not res.needs_tier3("payments.refund")
    assert res.needs_tier3("payments.charge.eu")


def test_disjoint_scopes_never_conflict() -> None:
    a = Goal(b"\x01" * 32, "search", 1, SALES)
    b = Goal(b"\x02" * 32, "payments", 1, FINANCE)
    assert resolve([a, b]).conflicts == []


def test_require_against_forbid_and_disjoint_fallbacks() -> None:
    a = Goal(
        b"\x01" * 32,
        "*",
        1,
        ({"op": "require_step", "step": "fallback"}, {"op": "allowed_fallbacks", "targets": ["a"]}),
    )
    b = Goal(
        b"\x02" * 32,
        "search",
        2,
        ({"op": "forbid_step", "step": "fallback"}, {"op": "allowed_fallbacks", "targets": ["b"]}),
    )
    reasons = sorted(c.reason for c in resolve([a, b]).conflicts)
    assert len(reasons) == 2 and "no fallback target is allowed by both" in reasons


# -- in the fold -----------------------------------------------------------------------


def fleet(policy_kb: KB | None = None) -> KB:
    kb = policy_kb or KB(seed=21)
    for name in ("sales", "finance", "agent"):
        kb.grant("admin", name, "member")
    kb.grant("admin", "v1", "verifier", tier=1, scopes=("*",))
    kb.grant("admin", "v1b", "verifier", tier=1, scopes=("*",))
    kb.grant("admin", "v2", "verifier", tier=2, scopes=("*",))
    kb.grant("admin", "human", "verifier", tier=3, scopes=("*",))
    for name in ("sales", "finance", "agent", "v1", "v1b", "v2", "human"):
        kb.sync("admin", name)
    return kb


def goal(
    kb: KB, owner: str, constraints: tuple[dict, ...], priority: int, scope: str = "payments"
) -> bytes:
    body = {
        "title": owner,
        "scope": scope,
        "priority": priority,
        "retired": False,
        "constraints": list(constraints),
    }
    op = kb.write(owner, "goal.set", body)
    kb.sync(owner, "v2")
    kb.write(
        "v2", "goal.review", {"goal": op.id, "version": op.id, "verdict": "approve", "comment": ""}
    )
    return op.id


def fix_row(kb: KB, fix: bytes) -> dict:
    r = Replica(kb.genesis)
    for op in kb.ops[1:]:
        r.ingest(op)
    return next(f for f in snapshot(r)["fixes"] if f["fix"] == fix)


def test_a_fix_that_breaks_an_active_goal_is_blocked_whatever_the_verdicts() -> None:
    kb = fleet()
    goal(kb, "finance", FINANCE, 50)
    pattern = sample_report(service="payments")["pattern"]
    fix = kb.propose(
        "agent", pattern, sample_recipe("payments", attempts=5, idempotent=True), "low"
    )
    for v in ("v1", "v1b", "v2", "human"):
        kb.sync("agent", v)
        kb.sync("v2", v)
        kb.write(v, "fix.attest", kb.attest_body(fix, "payments"))  # every verifier accepts
    row = fix_row(kb, fix)
    assert row["status"] == "blocked"
    assert "retry.max_attempts = 5 breaks <= 2" in row["violations"][0][1]


def test_malicious_verifier_cannot_get_a_goal_breaking_fix_accepted() -> None:
    kb = fleet()
    goal(kb, "finance", FINANCE, 50)
    pattern = sample_report(service="payments")["pattern"]
    bad = kb.propose(
        "agent", pattern, sample_recipe("payments", attempts=3, idempotent=False), "low"
    )
    kb.sync("agent", "v1")
    kb.sync("v2", "v1")
    kb.write("v1", "fix.attest", kb.attest_body(bad, "payments"))  # the malicious accept
    kb.sync("agent", "v1b")
    kb.write("v1b", "fix.attest", kb.attest_body(bad, "payments", "reject"))  # an honest reject
    row = fix_row(kb, bad)
    assert row["status"] == "blocked"


def test_equal_priority_conflict_raises_the_quorum_to_a_person() -> None:
    kb = fleet()
    goal(
        kb,
        "sales",
        (
            {"op": "<=", "field": "retry.max_attempts", "value": 9},
            {"op": ">=", "field": "retry.max_attempts", "value": 5},
        ),
        10,
    )
    goal(kb, "finance", FINANCE, 10)
    pattern = kb.report("agent", service="payments").body["pattern"]  # fixes need its scope
    fix = kb.propose(
        "agent", pattern, sample_recipe("payments.query", attempts=2, idempotent=True), "low"
    )
    for v in ("v1", "v2"):
        kb.sync("agent", v)
        kb.sync("v2", v)
        kb.write(v, "fix.attest", kb.attest_body(fix, "payments"))
    row = fix_row(kb, fix)
    assert row["status"] == "proposed" and row["quorum"]["tier"] == 3
    kb.sync("agent", "human")
    kb.sync("v2", "human")
    kb.write("human", "fix.attest", kb.attest_body(fix, "payments"))
    assert fix_row(kb, fix)["status"] == "accepted"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), orders=st.lists(st.integers(0, 2**32), min_size=2, max_size=3))
def test_conflicts_resolve_identically_in_every_delivery_order(
    seed: int, orders: list[int]
) -> None:
    rng = random.Random(seed)
    kb = fleet(KB(seed=seed))
    menu = [
        {"op": "<=", "field": "retry.max_attempts", "value": rng.randint(2, 4)},
        {"op": ">=", "field": "retry.max_attempts", "value": rng.randint(3, 6)},
        {"op": "require_step", "step": "idempotency_key", "when": "retry"},
        {"op": "forbid_step", "step": "fallback"},
        {"op": "require_step", "step": "fallback"},
        {"op": "=", "field": "retry.jitter", "value": rng.choice(["full", "none"])},
    ]
    goals = []
    for owner in ("sales", "finance", "agent"):
        cons = tuple(rng.sample(menu, k=rng.randint(1, 3)))
        scope = rng.choice(["payments", "payments.charge", "*"])
        goals.append(goal(kb, owner, cons, rng.choice([1, 2, 2, 3]), scope))
    pattern = sample_report(service="payments")["pattern"]
    fixes = []
    for i in range(3):
        recipe = sample_recipe("payments", attempts=2 + i, idempotent=i != 1)
        fixes.append(kb.propose("agent", pattern, recipe, "low"))
    for v in ("v1", "human"):
        kb.sync("agent", v)
        kb.sync("v2", v)
        for f in fixes:
            kb.write(
                v, "fix.attest", kb.attest_body(f, "payments", rng.choice(["accept", "reject"]))
            )
    ops = kb.ops[1:]
    states = []
    for o in orders:
        shuffled = list(ops)
        random.Random(o).shuffle(shuffled)
        r = Replica(kb.genesis)
        for op in shuffled:
            r.ingest(op)
        snap = snapshot(r)
        states.append((snap["root"], snap["conflicts"], snap["fixes"], snap["goals"]))
    assert all(s == states[0] for s in states)
    assert len(states[0][3]) == 3 and all(g["active"] for g in states[0][3])


def test_a_lost_conflict_drops_constraints_only_where_the_scopes_overlap() -> None:
    """docs/goals.md's worked example: finance (payments.charge) beats sales
    (payments) on max_attempts; in payments.refund sales' >= 5 still holds."""
    sales = Goal(b"\x01" * 32, "payments", 10, SALES, "sales")
    finance = Goal(b"\x02" * 32, "payments.charge", 50, FINANCE, "finance")
    res = resolve([sales, finance])
    assert [(c.scope, c.winner) for c in res.conflicts] == [("payments.charge", finance.id)]
    two = {"payments.charge": [], "payments.charge.eu": [], "payments.refund": [sales.id]}
    for scope, broken in two.items():
        recipe = sample_recipe(scope, attempts=2, idempotent=True)
        assert [g for g, _ in violations(recipe, [sales, finance], res)] == broken, scope
    five = sample_recipe("payments.refund", attempts=5)
    assert violations(five, [sales, finance], res) == []  # finance does not cover refunds
    five_charge = sample_recipe("payments.charge", attempts=5, idempotent=True)
    assert [g for g, _ in violations(five_charge, [sales, finance], res)] == [finance.id]


def test_equal_priorities_drop_both_only_in_the_overlap() -> None:
    a = Goal(b"\x01" * 32, "payments", 10, SALES, "sales")
    b = Goal(b"\x02" * 32, "payments.charge", 10, FINANCE, "finance")
    res = resolve([a, b])
    charge = sample_recipe("payments.charge", attempts=3, idempotent=True)
    assert violations(charge, [a, b], res) == []  # both bounds dropped: a person decides
    refund = sample_recipe("payments.refund", attempts=3, idempotent=True)
    assert [g for g, _ in violations(refund, [a, b], res)] == [a.id]


def test_a_review_counts_only_for_the_goal_it_names() -> None:
    """protocol.md §6.6: a review is filed under its `goal` field; one naming another
    goal than the version's counts for neither (the spec said otherwise until the
    fold was compared with it)."""
    from gossipmind.core.snapshot import goal_rows

    kb = KB(seed=4)
    kb.grant("admin", "m", "member")
    kb.sync("admin", "m")
    body = {"title": "t", "scope": "search", "priority": 1, "retired": False}
    body["constraints"] = [{"op": "forbid_step", "step": "fallback"}]
    g = kb.write("m", "goal.set", body)
    kb.sync("m", "admin")
    review = {"goal": g.id, "version": g.id, "verdict": "approve", "comment": ""}
    kb.write("admin", "goal.review", review)
    assert goal_rows(kb.replica("admin"))[0]["active"]
    kb.write("admin", "goal.review", {**review, "goal": b"\x00" * 32, "verdict": "reject"})
    rows = goal_rows(kb.replica("admin"))
    assert [r["active"] for r in rows if r["goal"] == g.id] == [True]
