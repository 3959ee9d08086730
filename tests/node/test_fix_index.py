"""FixIndex: which fixes' status changes are reported (fix_events, the log)."""

from __future__ import annotations

from gossipmind.core.ops import Op
from gossipmind.core.replica import Replica
from gossipmind.node.fixes import FixIndex
from gossipmind.testing import KB, sample_recipe, sample_report


def accepted_fix(kb: KB) -> tuple[Replica, bytes]:
    kb.grant("admin", "agent", "member")
    kb.grant("admin", "v1", "verifier", tier=1, scopes=("search",))
    for name in ("agent", "v1"):
        kb.sync("admin", name)
    pattern = kb.report("agent", service="search").body["pattern"]  # its scope: search.query
    fix = kb.propose("agent", pattern, sample_recipe("search.query"), "low")
    kb.sync("agent", "v1")
    kb.write("v1", "fix.attest", kb.attest_body(fix, "search"))
    r = Replica(kb.genesis)
    for op in kb.ops[1:]:
        r.ingest(op)
    return r, fix


def test_an_equivocation_by_a_verifier_reports_its_fix_falling_back() -> None:
    """v1 signs two reports with one seq: it is an equivocator, all its ops are
    void, its accept with them: the fix goes back to `proposed`. No fix or
    membership op says so; the index used to miss it."""
    kb = KB()
    r, fix = accepted_fix(kb)
    index = FixIndex(r)
    assert index.status[fix] == "accepted"
    forks: list[Op] = [kb.forge("v1", "pattern.report", sample_report(count=n)) for n in (1, 2)]
    assert forks[0].seq == forks[1].seq
    applied = [op for fork in forks for op in r.ingest(fork).applied]
    assert len(applied) == 2 and r.membership.equivocators
    index.note(applied)
    assert index.dirty
    assert [(t.fix, t.old, t.new) for t in index.drain()] == [(fix, "accepted", "proposed")]


def test_a_report_changes_no_fix_and_is_not_looked_at_again() -> None:
    kb = KB()
    r, _ = accepted_fix(kb)
    index = FixIndex(r)
    report = kb.write("agent", "pattern.report", sample_report(count=3))
    index.note(r.ingest(report).applied)
    assert not index.dirty and index.drain() == []


class _Counting(dict):  # type: ignore[type-arg]
    """The fold's fixes, counting full scans."""

    scans = 0

    def values(self):  # type: ignore[no-untyped-def]
        _Counting.scans += 1
        return super().values()


def test_a_proposal_marks_its_patterns_fixes_without_scanning_every_fix() -> None:
    """Each fix.propose scanned every fix the replica held, inline as ops applied:
    a sync frame of 2 000 proposals with 20 000 fixes held cost 1.3 to 2.4 s."""
    kb = KB()
    r, fix = accepted_fix(kb)
    index = FixIndex(r)
    r.fold.fixes = _Counting(r.fold.fixes)  # type: ignore[assignment]
    pattern = r.fold.fixes[fix].pattern
    other = kb.propose("agent", pattern, sample_recipe("search.query", attempts=2), "low")
    applied = r.ingest(kb.ops[-1]).applied  # the proposal the KB just wrote
    assert [op.kind for op in applied] == ["fix.propose"]
    _Counting.scans = 0
    index.note(applied)
    assert _Counting.scans == 0
    assert {fix, other} <= index._dirty


def _goal(scope: str, **extra: object) -> dict[str, object]:
    rule = {"op": "<=", "field": "retry.max_attempts", "value": 3}
    body = {"title": "g", "scope": scope, "priority": 1, "retired": False, "constraints": [rule]}
    return {**body, **extra}


def test_a_goal_op_marks_only_the_fixes_whose_goal_effect_changes() -> None:
    """A goal op used to mark every fix (the SDK's index re-read every row, the
    verifier passed over every fix). It marks those in the scopes of the goals
    that changed whose violations or needed tier differ (Fold.fixes_goals_change)."""
    kb = KB()
    for name in ("agent", "owner"):
        kb.grant("admin", name, "member")
    kb.grant("admin", "v2", "verifier", tier=2, scopes=("*",))
    for name in ("agent", "owner", "v2"):
        kb.sync("admin", name)
    fixes = {}
    for service, attempts in (("search", 3), ("search", 5), ("llm", 5)):
        pattern = kb.report("agent", service=service, operation="query").body["pattern"]
        recipe = sample_recipe(f"{service}.query", attempts)
        fixes[service, attempts] = kb.propose("agent", pattern, recipe)
    r = Replica(kb.genesis)
    for op in kb.ops[1:]:
        r.ingest(op)
    index = FixIndex(r)
    assert index.take() == set()
    for who in ("agent", "v2"):
        kb.sync(who, "owner")
    goal = kb.write("owner", "goal.set", _goal("search"))
    index.note(r.ingest(goal).applied)
    assert index.dirty
    assert index.take() == set()  # not reviewed: no active goal changed
    kb.sync("owner", "v2")
    review = {"goal": goal.id, "version": goal.id, "verdict": "approve", "comment": ""}
    index.note(r.ingest(kb.write("v2", "goal.review", review)).applied)
    assert index.take() == {fixes["search", 5]}  # the one it breaks; not llm's, nor 3 attempts
    statuses = {k: r.fold.fix_status(r.fold.fixes[f])["status"] for k, f in fixes.items()}
    assert statuses == {("search", 3): "proposed", ("search", 5): "blocked", ("llm", 5): "proposed"}
