"""One member's fix.outcome counters cannot outweigh every other agent
(FINDINGS 2 of the verification review).

Three honest agents see a good fix work 95/100 each and a bad one 5/100 each;
one hostile member reports 10^9/0 on the good fix and 10^9/10^9 on the bad one.
The sums made the good fix "bad" (a tier-2 verifier revoked it, for good), the
bad one "good", and rank() put the bad one first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gossipmind.core.policy import Policy
from gossipmind.core.snapshot import fix_row, pattern_row
from gossipmind.learn.rank import rank
from gossipmind.node.verifier import Verifier
from gossipmind.store.queries import Reader
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, sample_recipe
from gossipmind.verify.checks import fleet_evidence, judge

AGENTS = ("c1", "c2", "c3")
HUGE = 10**9


def outcome(kb: KB, who: str, fix: bytes, attempts: int, successes: int) -> None:
    body = {"fix": fix, "attempts": attempts, "successes": successes, "window": [0, 1000]}
    kb.write(who, "fix.outcome", body)


def network() -> tuple[KB, bytes, bytes, bytes]:
    kb = KB(seed=9, policy=Policy(scope_risk={}))
    for n in (*AGENTS, "mal", "a1", "a2"):
        kb.grant("admin", n, "member")
    kb.grant("admin", "v1", "verifier", tier=1)
    kb.grant("admin", "v2", "verifier", tier=2)
    for n in (*AGENTS, "mal", "a1", "a2", "v1", "v2"):
        kb.sync("admin", n)
    pid = kb.report("a1", error_class="timeout", latency_ms=3000).body["pattern"]
    kb.report("a2", error_class="timeout", latency_ms=3000)
    kb.sync("a1", "a2")
    good = kb.propose("a2", pid, sample_recipe("search.query", attempts=3))
    bad = kb.propose("a2", pid, sample_recipe("search.query", attempts=2))
    kb.sync("a2", "v1")
    for fix in (good, bad):
        kb.write("v1", "fix.attest", kb.attest_body(fix, "search"))
    for a in AGENTS:
        kb.sync("v1", a)
        outcome(kb, a, good, 100, 95)
        outcome(kb, a, bad, 100, 5)
    kb.sync("v1", "mal")
    outcome(kb, "mal", good, HUGE, 0)
    outcome(kb, "mal", bad, HUGE, HUGE)
    for src in ("v1", "mal", *AGENTS):
        kb.sync(src, "v2")
    return kb, pid, good, bad


async def test_one_member_s_outcomes_neither_revoke_a_good_fix_nor_rank_a_bad_one_first(
    tmp_path: Path,
) -> None:
    kb, _, good, bad = network()
    r = kb.replica("v2")
    rows = {fid: fix_row(r, r.fold.fixes[fid]) for fid in (good, bad)}
    g, b = rows[good], rows[bad]
    assert g is not None and b is not None
    assert g["status"] == b["status"] == "accepted"
    assert rank([g, b])[0]["fix"] == good  # was the bad one
    # one agent can neither decide fleet evidence nor hold it back: the good fix is
    # judged on the others (without mal and the best agent, 190/200), the bad one too
    assert fleet_evidence(g, r.policy)[0] == "good"  # was "bad", then "wait"
    state, _, evidence = fleet_evidence(b, r.policy)
    assert state == "bad" and evidence["fleet_upper_bp"] < r.policy.evidence_min_success_bp
    # each author weighs at most 100 attempts at its own rate; raw counters are kept
    assert (g["attempts"], g["successes"], b["attempts"], b["successes"]) == (400, 285, 400, 115)
    assert [o[1:] for o in g["outcomes"] if o[0] == kb.key("mal")] == [[HUGE, 0]]
    written: list[tuple[str, dict[str, Any]]] = []

    async def write(kind: str, body: dict[str, Any]) -> None:
        written.append((kind, body))
        kb.write("v2", kind, body)

    v = Verifier(r, kb.key("v2"), write, revoke_window_s=0)  # judged on the totals
    assert await v.watch_outcomes() == 1
    assert [(k, body["fix"]) for k, body in written] == [("fix.revoke", bad)]
    statuses = {fid: (fix_row(r, r.fold.fixes[fid]) or {})["status"] for fid in (good, bad)}
    assert statuses == {good: "accepted", bad: "revoked"}
    # the stored rows, in a real SQLite store, hold the weighted figures too
    path = tmp_path / "kb.sqlite3"
    with Store.create(path, kb.genesis, synchronous="OFF") as store:
        store.ingest(kb.ops[1:], verified=True)
    with Reader(path) as reader:
        stored = {f["fix"]: f for f in reader.fixes()}
    assert (stored[good]["status"], stored[good]["attempts"], stored[good]["successes"]) == (
        "accepted",
        400,
        285,
    )
    assert stored[bad]["status"] == "revoked"


def test_a_tier2_verifier_does_not_accept_a_failing_fix_on_one_member_s_word() -> None:
    """The same path made a tier-2 verifier accept a failing provisional fix."""
    kb, pid, _, bad = network()
    r = kb.replica("v2")
    row = fix_row(r, r.fold.fixes[bad])
    pattern = r.fold.patterns[pid]
    assert row is not None
    verdict = judge(row, pattern_row(pattern, r.policy.synthesis_threshold), r.policy, tier=2)
    assert verdict is not None and not verdict.accept
    assert verdict.reasons[0].startswith("fleet success ≤ ")


def test_an_honest_fleet_is_judged_as_before() -> None:
    """Agents below the cap count in full: 3 agents at 95/100 are good evidence; at
    5/100 bad; leaving any one out does not change either verdict."""
    policy = Policy()
    base = {"fix": b"f" * 32, "recipe": sample_recipe("search.query")}
    for rate, want in ((95, "good"), (5, "bad")):
        outcomes = [[bytes([i]) * 32, 100, rate] for i in range(3)]
        row = base | {"outcomes": outcomes, "outcome_reporters": 3}
        row |= {"attempts": 300, "successes": 3 * rate}
        assert fleet_evidence(row, policy)[0] == want


def _row(outcomes: list[tuple[int, int]]) -> dict[str, Any]:
    rows = [[bytes([i]) * 32, a, x] for i, (a, x) in enumerate(outcomes)]
    return {
        "fix": b"f" * 32,
        "recipe": sample_recipe("search.query"),
        "outcomes": rows,
        "outcome_reporters": len(rows),
        "attempts": sum(a for a, _ in outcomes),
        "successes": sum(x for _, x in outcomes),
    }


def test_one_member_s_failures_no_longer_hold_a_tier2_acceptance() -> None:
    """The s10 learning review: 100 failed outcomes from one member kept every fix
    that needs a tier-2 verifier waiting until about 8 canaries had reported. The
    agents with the highest and the lowest rate are left out from three agents on."""
    policy = Policy()
    canaries = [(20, 20)] * 3
    assert fleet_evidence(_row([*canaries, (100, 0)]), policy)[0] == "good"  # was "wait"
    # nor can one member's successes carry a failing fix, or keep it from "bad"
    failing = [(100, 5)] * 3
    assert fleet_evidence(_row([*failing, (100, 100)]), policy)[0] == "bad"
    assert fleet_evidence(_row([*failing[:2], (100, 100)]), policy)[0] == "bad"
    # two agents: either verdict must hold with either left out (one may delay it)
    two = Policy(evidence_min_reporters=2)
    assert fleet_evidence(_row([(100, 95), (100, 95)]), two)[0] == "good"
    assert fleet_evidence(_row([(100, 95), (100, 0)]), two)[0] == "wait"


def test_one_member_does_not_decide_between_two_honest_agents_who_disagree() -> None:
    """Review of a5309fa: with three authors the trimmed rate was the middle
    author's alone, so a member siding with one of two honest agents who disagree
    (20/20 and 0/20: 50 % together) decided the verdict: its 20/20 made the fix
    "good" (a tier-2 accept), its 0/20 "bad" (a revoke). A verdict must also hold
    with that member's outcomes left out; the honest pair alone is not good."""
    policy = Policy()
    honest = [(20, 20), (20, 0)]
    assert fleet_evidence(_row([*honest, (20, 20)]), policy)[0] == "wait"  # was "good"
    # the honest pair's pooled 20/40 is bad evidence already: agreeing with it is no decision
    assert fleet_evidence(_row([*honest, (20, 0)]), policy)[0] == "bad"
