"""A fix has its pattern's scope, or it is never accepted (protocol.md §6.5).

Fixes are looked up by pattern and applied to that pattern's calls, while the
risk floor, the goals and the verifiers' scopes follow the recipe's scope. A
payments.charge fix scoped `search` was low risk and accepted by a search-only
verifier; one scoped `payments` escaped finance's goal on `payments.charge`.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

from gossipmind.core.policy import Policy
from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import snapshot
from gossipmind.store.queries import Reader
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, sample_recipe, sample_report

CHARGE = {"service": "payments", "operation": "charge", "error_class": "timeout"}
LOW = Policy(scope_risk={})  # payments not raised: one tier-1 accept takes a keyed retry


def deliver(kb: KB, ops: list[Any] | None = None) -> Replica:
    r = Replica(kb.genesis)
    for op in ops if ops is not None else kb.ops[1:]:
        r.ingest(op)
    return r


def rows(r: Replica) -> dict[bytes, dict[str, Any]]:
    return {f["fix"]: f for f in snapshot(r)["fixes"]}


def network(verifier_scope: str = "search") -> KB:
    kb = KB(seed=5, policy=LOW)
    for n in ("mal", "a1"):
        kb.grant("admin", n, "member")
    kb.grant("admin", "ver", "verifier", tier=1, scopes=(verifier_scope,))
    for n in ("mal", "a1", "ver"):
        kb.sync("admin", n)
    return kb


def accept(kb: KB, fix: bytes, scope: str) -> None:
    kb.sync("mal", "ver")
    kb.sync("a1", "ver")
    kb.write("ver", "fix.attest", kb.attest_body(fix, scope))


def test_a_payments_fix_scoped_search_is_rejected_whatever_a_search_verifier_says(
    tmp_path: Path,
) -> None:
    """The review's reproduction: a keyless retry x5 for payments.charge scoped
    `search`, accepted by a verifier granted only `search`. It was `accepted` at
    risk `low`; it is `rejected`, in memory and in a real store."""
    kb = network("search")
    pid = kb.report("a1", latency_ms=3000, **CHARGE).body["pattern"]
    kb.sync("a1", "mal")
    evil = kb.propose("mal", pid, sample_recipe("search", attempts=5), risk="low")
    accept(kb, evil, "search")
    row = rows(deliver(kb))[evil]
    assert row["accepts"] == [[kb.key("ver"), 1]]  # the attestation counts under `search`
    assert row["status"] == "rejected"  # was `accepted`
    assert (row["scope"], row["pattern_scope"]) == ("search", "payments.charge")
    path = tmp_path / "kb.sqlite3"
    with Store.create(path, kb.genesis, synchronous="OFF") as store:
        store.ingest(kb.ops[1:], verified=True)
    with Reader(path) as reader:
        (stored,) = reader.fixes()
    assert stored["fix"] == evil and stored["status"] == "rejected"
    # the same recipe with the pattern's scope: high risk (no key), a person must accept
    honest = kb.propose("mal", pid, sample_recipe("payments.charge", attempts=5), risk="low")
    row = rows(deliver(kb))[honest]
    assert (row["status"], row["risk"], row["quorum"]) == (
        "proposed",
        "high",
        {"count": 1, "tier": 3},
    )


def test_a_service_scoped_fix_cannot_escape_a_goal_on_its_operation() -> None:
    """docs/goals.md's worked example: with finance's goal on payments.charge,
    "retry x5" is `blocked`; the same recipe scoped `payments` was `proposed`
    with no violation (a goal on payments.charge does not cover `payments`)."""
    kb = KB(seed=11, policy=LOW)
    for n in ("fin", "sales", "a1"):
        kb.grant("admin", n, "member")
    kb.grant("admin", "ver", "verifier", tier=3, scopes=("*",))
    for n in ("fin", "sales", "a1", "ver"):
        kb.sync("admin", n)
    sales = kb.write(
        "sales",
        "goal.set",
        {
            "title": "sales: recover payments",
            "scope": "payments",
            "priority": 10,
            "retired": False,
            "constraints": [
                {"op": "require_step", "step": "retry"},
                {"op": ">=", "field": "retry.max_attempts", "value": 5},
            ],
        },
    )
    finance = kb.write(
        "fin",
        "goal.set",
        {
            "title": "finance: safe charges",
            "scope": "payments.charge",
            "priority": 50,
            "retired": False,
            "constraints": [
                {"op": "require_step", "step": "idempotency_key", "when": "retry"},
                {"op": "<=", "field": "retry.max_attempts", "value": 2},
            ],
        },
    )
    for g, owner in ((sales, "sales"), (finance, "fin")):
        kb.sync(owner, "admin")
        review = {"goal": g.id, "version": g.id, "verdict": "approve", "comment": ""}
        kb.write("admin", "goal.review", review)
    kb.sync("admin", "a1")
    pid = kb.report("a1", **CHARGE).body["pattern"]
    keyed = {"idempotent": True}
    two = kb.propose("a1", pid, sample_recipe("payments.charge", 2, **keyed))
    five = kb.propose("a1", pid, sample_recipe("payments.charge", 5, **keyed))
    wide = kb.propose("a1", pid, sample_recipe("payments", 5, **keyed))
    for fix, scope in ((two, "payments.charge"), (five, "payments.charge"), (wide, "payments")):
        kb.sync("a1", "ver")
        kb.write("ver", "fix.attest", kb.attest_body(fix, scope))
    got = rows(deliver(kb))
    assert got[two]["status"] == "accepted" and got[two]["violations"] == []
    assert got[five]["status"] == "blocked"
    assert "retry.max_attempts = 5 breaks <= 2" in got[five]["violations"][0][1]
    assert got[wide]["status"] == "rejected"  # was `proposed` with no violation


def test_a_fix_whose_pattern_no_report_names_is_never_accepted() -> None:
    """A pattern id is a hash anyone can compute: without a report, nothing says
    which calls the fix would be applied to, so it is not accepted until one comes."""
    kb = network("*")
    pid = sample_report(**CHARGE)["pattern"]
    fix = kb.propose("mal", pid, sample_recipe("payments.charge", 3, idempotent=True))
    accept(kb, fix, "payments.charge")
    row = rows(deliver(kb))[fix]
    assert row["accepts"] == [[kb.key("ver"), 1]]
    assert row["status"] == "proposed"  # was `accepted`
    assert row["pattern_scope"] == ""
    kb.report("a1", **CHARGE)
    assert rows(deliver(kb))[fix]["status"] == "accepted"


def test_pattern_scope_is_service_dot_operation_within_a_scope_s_length() -> None:
    from gossipmind.core.fold import pattern_scope

    assert pattern_scope("payments", "charge") == "payments.charge"
    assert pattern_scope("a" * 40, "b" * 23) == "a" * 40 + "." + "b" * 23  # 64 characters
    assert pattern_scope("a" * 40, "b" * 24) == "a" * 40  # 65: the service alone


def scenario() -> tuple[KB, bytes, bytes]:
    """A matching and a mismatched fix, accepted by a verifier, then their pattern's
    first report: the ops whose order the next test varies."""
    kb = network("*")
    pid = sample_report(**CHARGE)["pattern"]
    good = kb.propose("mal", pid, sample_recipe("payments.charge", 3, idempotent=True))
    bad = kb.propose("mal", pid, sample_recipe("search", 3))
    accept(kb, good, "payments.charge")
    kb.write("ver", "fix.attest", kb.attest_body(bad, "search"))
    kb.report("a1", **CHARGE)
    return kb, good, bad


def test_the_rule_gives_one_state_in_every_delivery_order_and_in_a_store(tmp_path: Path) -> None:
    """Status depends on whether a report of the pattern is known: a function of
    the set of ops. Every order of the last ops gives the same snapshot, and a store
    fed op by op (its rows updated incrementally) holds the same rows."""
    kb, good, bad = scenario()
    base, tail = kb.ops[1:4], kb.ops[4:]  # the grants; then proposals, verdicts, report
    assert len(tail) == 5
    reference = snapshot(deliver(kb))
    got = {f["fix"]: f["status"] for f in reference["fixes"]}
    assert (got[good], got[bad]) == ("accepted", "rejected")
    orders = list(itertools.permutations(tail))  # 120
    for order in orders:
        assert snapshot(deliver(kb, base + list(order))) == reference
    random.Random(1).shuffle(orders)
    for i, order in enumerate(orders[:4]):
        path = tmp_path / f"kb{i}.sqlite3"
        with Store.create(path, kb.genesis, synchronous="OFF") as store:
            for op in base + list(order):
                store.ingest([op], verified=True)
        with Reader(path) as reader:
            assert reader.fixes() == reference["fixes"]
