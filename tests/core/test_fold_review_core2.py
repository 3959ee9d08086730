"""Three defects of the fold found by review (core2).

1. The pattern scope of a ``service.operation`` longer than 64 characters was the
   bare ``service``, which a goal or risk floor on ``payments.charge`` does not
   cover: the fix for those very calls escaped both.
2. Every effective proposal of a fix was kept and rescanned by each status and
   row read, so one member re-proposing a fix made every later op on it cost
   more: quadratic ingest.
3. A report could name ``*`` as its service or operation; its pattern scope was
   then no scope (``*.charge``) or the universal one (``*``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from gossipmind.core.fold import pattern_scope
from gossipmind.core.ops import Op
from gossipmind.core.policy import Policy
from gossipmind.core.replica import Replica
from gossipmind.core.schema import check_body, fix_id
from gossipmind.core.snapshot import snapshot
from gossipmind.learn.synth import recipe_scope
from gossipmind.store.queries import Reader
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, sample_recipe, sample_report

LONG_OP = "charge.card.post-v1-customers-id-payment-intents-confirm"  # 65 with `payments.`


def deliver(genesis: Op, ops: list[Op]) -> Replica:
    r = Replica(genesis)
    for op in ops:
        r.ingest(op)
    return r


def rows(r: Replica) -> dict[bytes, dict[str, Any]]:
    return {f["fix"]: f for f in snapshot(r)["fixes"]}


def stored_fixes(path: Path, kb: KB, batch: int = 1) -> dict[bytes, dict[str, Any]]:
    """The fix rows of a real SQLite store fed ``kb``'s ops ``batch`` at a time."""
    ops = kb.ops[1:]
    with Store.create(path, kb.genesis, synchronous="OFF") as store:
        for i in range(0, len(ops), batch):
            store.ingest(ops[i : i + batch], verified=True)
    with Reader(path) as reader:
        return {f["fix"]: f for f in reader.fixes()}


# -- 1. the 64-character fallback ------------------------------------------------


def test_the_pattern_scope_of_a_long_operation_is_its_longest_dotted_prefix() -> None:
    assert len(f"payments.{LONG_OP}") == 65
    assert pattern_scope("payments", LONG_OP) == "payments.charge.card"  # was `payments`
    assert recipe_scope({"service": "payments", "operation": LONG_OP}) == "payments.charge.card"
    # a `.` right after the 64th character: the whole 64 characters are the prefix
    op = "a" * 54 + ".tail"
    assert pattern_scope("payments", op) == f"payments.{'a' * 54}"
    # no `.` inside the operation's first 55 characters: the service, as before
    assert pattern_scope("payments", "x" * 56) == "payments"
    assert pattern_scope("s" * 64, "op") == "s" * 64
    assert pattern_scope("payments", "charge") == "payments.charge"  # fits: unchanged


def test_a_fix_for_a_long_operation_keeps_the_goal_and_risk_floor_on_its_prefix(
    tmp_path: Path,
) -> None:
    """The review's reproduction: policy and an approved goal on `payments.charge`,
    a keyless retry x5 for `payments` / LONG_OP accepted by one tier-1 verifier. It
    was scoped `payments`, risk `low`, `accepted` with no violation; it is scoped
    `payments.charge.card`, risk `high`, needs tier 3 and is `blocked` by the goal,
    exactly as the same recipe for the short operation `charge.card`."""
    policy = Policy(
        scope_risk={"payments.charge": "high"}, non_idempotent_scopes=["payments.charge"]
    )
    kb = KB(seed=11, policy=policy)
    for n in ("fin", "a1"):
        kb.grant("admin", n, "member")
    kb.grant("admin", "ver", "verifier", tier=1, scopes=("*",))
    for n in ("fin", "a1", "ver"):
        kb.sync("admin", n)
    goal = kb.write(
        "fin",
        "goal.set",
        {
            "title": "finance: safe charges",
            "scope": "payments.charge",
            "priority": 50,
            "retired": False,
            "constraints": [{"op": "<=", "field": "retry.max_attempts", "value": 2}],
        },
    )
    kb.sync("fin", "admin")
    review = {"goal": goal.id, "version": goal.id, "verdict": "approve", "comment": ""}
    kb.write("admin", "goal.review", review)
    kb.sync("admin", "a1")
    fixes = {}
    for op in ("charge.card", LONG_OP):
        report = kb.report("a1", service="payments", operation=op, error_class="timeout")
        scope = pattern_scope("payments", op)
        recipe = sample_recipe(scope, attempts=5, idempotent=False)
        fixes[op] = kb.propose("a1", report.body["pattern"], recipe)
        kb.sync("a1", "ver")
        kb.write("ver", "fix.attest", kb.attest_body(fixes[op], scope))
    live = rows(deliver(kb.genesis, kb.ops[1:]))
    stored = stored_fixes(tmp_path / "kb.sqlite3", kb)
    for got in (live, stored):
        short, long = got[fixes["charge.card"]], got[fixes[LONG_OP]]
        assert (long["scope"], long["pattern_scope"]) == ("payments.charge.card",) * 2
        assert long["risk"] == "high"  # was `low`
        assert long["quorum"] == {"count": 1, "tier": 3}
        assert long["violations"] == [[goal.id, "retry.max_attempts = 5 breaks <= 2"]]
        assert long["status"] == "blocked"  # was `accepted`
        for key in ("risk", "quorum", "violations", "status", "scope"):
            assert long[key] == short[key], key


# -- 2. duplicate proposals ---------------------------------------------------------


def proposals_network() -> tuple[KB, bytes, dict[str, Any]]:
    kb = KB(seed=3, policy=Policy(scope_risk={}))
    for n in ("m", "n"):
        kb.grant("admin", n, "member")
        kb.sync("admin", n)
    pattern = kb.report("m", service="search", operation="query").body["pattern"]
    kb.sync("m", "n")
    return kb, pattern, sample_recipe("search.query")


def test_a_member_re_proposing_a_fix_adds_nothing_to_its_aggregate(tmp_path: Path) -> None:
    """One member proposed the same fix 300 times: the fix held 300 proposals, and
    every status and row read rescanned (and sorted) them all. It holds one entry
    per proposer, with the first proposal and the highest declared risk kept as
    running values; the row is the one a from-scratch fold gives."""
    kb, pattern, recipe = proposals_network()
    fid = b""
    for i in range(300):
        risk = "medium" if i == 150 else "low"
        fid = kb.propose("m", pattern, recipe, risk=risk)
    r = deliver(kb.genesis, kb.ops[1:])
    agg = r.fold.fixes[fid]
    assert len(agg.proposals) == 1  # was 300
    assert agg.declared == "medium"
    first = min(
        (op for op in kb.ops if op.kind == "fix.propose"), key=lambda op: (op.lamport, op.id)
    )
    assert agg.first_proposal is not None and agg.first_proposal["key"] == (first.lamport, first.id)
    row = rows(r)[fid]
    assert row["proposers"] == [kb.key("m")]
    assert row["risk"] == "medium"  # the highest declared risk, not the first's
    assert row["proposed_ts"] == first.ts
    assert stored_fixes(tmp_path / "kb.sqlite3", kb)[fid] == row


def test_proposal_running_values_do_not_depend_on_delivery_order(tmp_path: Path) -> None:
    """Two members propose the same fix several times each with different risks
    and rationales; a revoke of one member then makes their proposals void (a
    rebuild). Every delivery order, op by op and in batches, and a real store fed
    one op at a time give the same row as the in-order fold."""
    kb, pattern, recipe = proposals_network()
    for i in range(6):
        who = "m" if i % 2 else "n"
        body = {
            "pattern": pattern,
            "recipe": recipe,
            "risk": ("low", "medium", "high")[i % 3],
            "rationale": f"r{i}",
            "origin": "synth",
        }
        kb.write(who, "fix.propose", body)
        kb.sync(who, "m" if who == "n" else "n")
    fid = fix_id(pattern, recipe)
    before = kb.ops[1:]
    reference = rows(deliver(kb.genesis, before))[fid]
    assert len(reference["proposers"]) == 2 and reference["risk"] == "high"
    rng = random.Random(7)
    for _ in range(6):
        shuffled = rng.sample(before, len(before))
        assert rows(deliver(kb.genesis, shuffled))[fid] == reference
        batched = Replica(kb.genesis)
        for i in range(0, len(shuffled), 4):
            batched.ingest_many(shuffled[i : i + 4])
        assert rows(batched)[fid] == reference
    kb.sync("n", "admin")
    kb.revoke("admin", "n", retroactive=True)
    after = kb.ops[1:]
    reference = rows(deliver(kb.genesis, after))[fid]
    assert reference["proposers"] == [kb.key("m")]  # n's proposals are void now
    r = deliver(kb.genesis, after)
    agg = r.fold.fixes[fid]
    m_risks = [
        op.body["risk"] for op in after if op.kind == "fix.propose" and op.author == kb.key("m")
    ]
    assert agg.declared == max(m_risks, key=("low", "medium", "high").index)
    for _ in range(4):
        shuffled = rng.sample(after, len(after))
        assert rows(deliver(kb.genesis, shuffled))[fid] == reference
    assert stored_fixes(tmp_path / "kb.sqlite3", kb)[fid] == reference


# -- 3. `*` as a report's service or operation ---------------------------------------


@pytest.mark.parametrize("field", ["service", "operation"])
def test_a_pattern_that_names_the_wildcard_has_no_scope_and_no_fix_is_accepted(
    field: str,
) -> None:
    """A report with service `*` gave the pattern scope `*.charge`, no valid scope
    (and with a long operation `*`, the scope that covers every other). Such a
    report stays valid (refusing it would split old and new releases), but its
    pattern scope is undefined: no fix for it is ever accepted, whatever its
    scope, and a name that merely contains `*` is still a name."""
    assert pattern_scope(**{"service": "payments", "operation": "charge", field: "*"}) == ""
    assert pattern_scope("*", "x" * 70) == "" and pattern_scope("pay*", "charge") == "pay*.charge"
    names = {"service": "payments", "operation": "charge", field: "*"}
    check_body("pattern.report", sample_report(**names))  # still a valid report


@pytest.mark.parametrize("scope", ["*", "payments"])
def test_a_fix_for_a_wildcard_pattern_is_never_accepted(tmp_path: Path, scope: str) -> None:
    """With service `*` and an operation of 63+ characters the pattern scope was
    `*`: a fix scoped `*` — covering every call — was accepted by one verifier."""
    kb = KB(seed=12)
    kb.grant("admin", "a1", "member")
    kb.grant("admin", "ver", "verifier", tier=1, scopes=("*",))
    for n in ("a1", "ver"):
        kb.sync("admin", n)
    report = kb.report("a1", service="*", operation="x" * 63, error_class="timeout")
    fix = kb.propose("a1", report.body["pattern"], sample_recipe(scope, idempotent=True))
    kb.sync("a1", "ver")
    kb.write("ver", "fix.attest", kb.attest_body(fix, scope))
    for got in (rows(deliver(kb.genesis, kb.ops[1:])), stored_fixes(tmp_path / "kb.sqlite3", kb)):
        assert got[fix]["pattern_scope"] == "" and got[fix]["status"] != "accepted"
