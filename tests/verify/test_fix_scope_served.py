"""A fix whose recipe scope is not its pattern's: verifiers reject it and no node
serves it, whatever a verifier signed (FINDINGS 1 of the verification review)."""

from __future__ import annotations

import pytest

from gossipmind.core.policy import Policy
from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import fix_row, pattern_row
from gossipmind.node.fixes import FixIndex
from gossipmind.testing import KB, sample_recipe, sample_report
from gossipmind.verify.checks import check_fix

CHARGE = {"service": "payments", "operation": "charge", "error_class": "timeout"}


def replica(kb: KB) -> Replica:
    r = Replica(kb.genesis)
    for op in kb.ops[1:]:
        r.ingest(op)
    return r


@pytest.mark.parametrize("scope", ["search", "payments", "payments.charge.eu"])
def test_a_verifier_rejects_a_recipe_scoped_other_than_its_pattern(scope: str) -> None:
    """`search` skipped the non-idempotent rule (the review's keyless retry x5 was
    accepted); `payments` escapes goals on payments.charge; a narrower scope names
    calls the fix is not applied to. The verdict names the pattern's scope."""
    kb = KB(seed=5)
    kb.grant("admin", "a1", "member")
    kb.sync("admin", "a1")
    kb.report("a1", latency_ms=3000, **CHARGE)
    r = kb.replica("a1")
    p = next(iter(r.fold.patterns.values()))
    pattern = pattern_row(p, r.policy.synthesis_threshold)
    fid = kb.propose("a1", p.pattern, sample_recipe(scope, attempts=5))
    row = fix_row(r, r.fold.fixes[fid])
    assert row is not None
    verdict = check_fix(row, pattern, r.policy)
    assert not verdict.accept
    assert verdict.reasons[0] == (
        f"recipe scope {scope!r} is not the pattern's scope 'payments.charge'"
        " (service.operation): it would be applied to payments.charge calls"
    )
    honest = fix_row(r, r.fold.fixes[kb.propose("a1", p.pattern, sample_recipe("payments.charge"))])
    assert honest is not None
    assert "without an idempotency key" in check_fix(honest, pattern, r.policy).reasons[0]


def two_fixes() -> tuple[KB, bytes, bytes, bytes]:
    """A verifier (hostile or mistaken) accepts two fixes for a payments.charge
    pattern no report names yet; one is scoped `search`."""
    kb = KB(seed=6, policy=Policy(scope_risk={}))
    kb.grant("admin", "mal", "member")
    kb.grant("admin", "a1", "member")
    kb.grant("admin", "ver", "verifier", tier=1, scopes=("*",))
    for n in ("mal", "a1", "ver"):
        kb.sync("admin", n)
    pid = sample_report(**CHARGE)["pattern"]
    good = kb.propose("mal", pid, sample_recipe("payments.charge", 3, idempotent=True))
    evil = kb.propose("mal", pid, sample_recipe("search", 5))
    kb.sync("mal", "ver")
    for fix, scope in ((good, "payments.charge"), (evil, "search")):
        kb.write("ver", "fix.attest", kb.attest_body(fix, scope))
    return kb, pid, good, evil


def test_no_node_serves_a_fix_for_another_scope_not_even_to_canaries() -> None:
    """While the pattern is unknown neither fix is served, not even as a provisional
    fix to canary agents (which calls would it be for?); once a report names the
    pattern, GET /v1/fix (FixIndex.best) serves only the fix with its scope."""
    kb, pid, good, evil = two_fixes()
    r = replica(kb)
    index = FixIndex(r)
    assert (index.status[good], index.status[evil]) == ("proposed", "proposed")
    assert index.best(pid) is None
    assert index.best(pid, canary=True) is None
    r.ingest(kb.report("a1", **CHARGE))
    for canary in (False, True):
        best = index.best(pid, canary=canary)
        assert best is not None and best["fix"] == good
    assert [x["fix"] for x in index.rows(pattern=pid, status="accepted")] == [good]


def test_the_index_reports_what_a_pattern_s_first_report_changes() -> None:
    """The first report of a pattern changes its fixes' status: the index (SSE
    stream, SDK caches) reports proposed -> accepted and proposed -> rejected."""
    kb, _, good, evil = two_fixes()
    r = replica(kb)
    index = FixIndex(r)
    index.note(r.ingest(kb.report("a1", **CHARGE)).applied)
    assert index.dirty
    got = {(t.fix, t.old, t.new) for t in index.drain()}
    assert got == {(good, "proposed", "accepted"), (evil, "proposed", "rejected")}
    index.note(r.ingest(kb.report("a1", count=2, **CHARGE)).applied)
    assert not index.dirty  # a later report of a known pattern changes no status
