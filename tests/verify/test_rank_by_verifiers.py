"""Before any outcome, accepted fixes rank by the verifiers' own drill figure, never
by the proposer's published one (FINDINGS 4 of the verification review)."""

from __future__ import annotations

import json
from typing import Any

import trio

from gossipmind.api.client import Client, Fix
from gossipmind.api.wire import fix_summary
from gossipmind.core.schema import fix_id
from gossipmind.core.snapshot import fix_row, pattern_row
from gossipmind.learn import rank as rank_mod
from gossipmind.learn.drill import drill
from gossipmind.learn.rank import rank
from gossipmind.learn.simulator import FaultModel
from gossipmind.learn.synth import propose_body, synthesize
from gossipmind.node.fixes import FixIndex
from gossipmind.node.verifier import Verifier
from gossipmind.testing import KB


def network() -> tuple[KB, bytes, bytes, bytes]:
    """The honest rule recipe (published truthfully) and mal's weaker recipe
    published with success_bp 10 000 (its real drill: lower)."""
    kb = KB(seed=21)
    for n in ("a1", "a2", "mal"):
        kb.grant("admin", n, "member")
    kb.grant("admin", "ver", "verifier", tier=1)
    for n in ("a1", "a2", "mal", "ver"):
        kb.sync("admin", n)
    kb.report("a1", error_class="timeout", latency_ms=3000)
    kb.report("a2", error_class="timeout", latency_ms=3000)
    kb.sync("a1", "a2")
    kb.sync("a2", "mal")
    r = kb.replica("mal")
    pid, p = next(iter(r.fold.patterns.items()))
    row = pattern_row(p, r.policy.synthesis_threshold)
    model = FaultModel.from_pattern(row)
    honest = synthesize(row, r.policy).candidates[0]
    h_fid = fix_id(pid, honest.recipe)
    h_drill = drill(honest.recipe, model, h_fid)
    summary = {**h_drill.to_body(), "model": model.to_body()}
    kb.write("a2", "fix.propose", propose_body(honest, pid, summary))
    weak = {
        "scope": honest.recipe["scope"],
        "budget_ms": 60000,
        "steps": [
            {
                "type": "retry",
                "max_attempts": 2,
                "base_ms": 100,
                "cap_ms": 200,
                "jitter": "full",
                "on": ["timeout"],
            }
        ],
    }
    w_fid = fix_id(pid, weak)
    bogus = {**drill(weak, model, w_fid).to_body(), "success_bp": 10_000, "model": model.to_body()}
    body = {"pattern": pid, "recipe": weak, "risk": "low", "rationale": "x", "origin": "synth"}
    kb.write("mal", "fix.propose", body | {"drill": bogus})
    for src in ("a2", "mal"):
        kb.sync(src, "ver")
    return kb, pid, h_fid, w_fid


async def test_the_node_ranks_by_the_verifiers_drill_not_the_proposer_s() -> None:
    kb, pid, honest, weak = network()

    async def write(kind: str, body: dict[str, Any]) -> None:
        kb.write("ver", kind, body)

    v = Verifier(kb.replica("ver"), kb.key("ver"), write)
    with trio.fail_after(30):
        for row in v.pending():
            assert await v.judge(row) == "accept"
    r = kb.replica("ver")
    rows = {fid: fix_row(r, r.fold.fixes[fid]) for fid in (honest, weak)}
    h, w = rows[honest], rows[weak]
    assert h is not None and w is not None
    assert h["status"] == w["status"] == "accepted"
    assert (h["attempts"], w["attempts"]) == (0, 0)  # no outcome yet: a tie on evidence
    assert w["drill"]["success_bp"] == 10_000 > h["drill"]["success_bp"]  # published
    theirs, mine = w["attestations"][0]["evidence"], h["attestations"][0]["evidence"]
    assert theirs["published_drill"] == "differ"
    assert theirs["drill_success_bp"] < mine["drill_success_bp"]  # what the verifier measured
    best = FixIndex(r).best(pid)
    assert best is not None and best["fix"] == honest  # GET /v1/fix, /v1/failures
    # a fix summary carries the verifiers' figure as `drill_bp`: ranked the same way
    assert rank_mod.drill_bp(h) == mine["drill_success_bp"]
    summaries = [
        {"fix": x["fix"], "attempts": 0, "successes": 0, "drill_bp": rank_mod.drill_bp(x)}
        for x in (w, h)
    ]
    assert [x["fix"] for x in rank(summaries)] == [x["fix"] for x in rank([w, h])]


def test_the_verifiers_figure_is_the_lowest_accepting_one_that_counts() -> None:
    def att(verdict: str, tier: int, bp: Any) -> dict[str, Any]:
        return {"verdict": verdict, "tier": tier, "evidence": {"drill_success_bp": bp}}

    row = {
        "fix": b"x",
        "drill": {"success_bp": 10_000},  # the proposer's: never read
        "attestations": [
            att("accept", 1, 9000),
            att("accept", 2, 8500),
            att("reject", 2, 100),  # a reject is no figure of the fix working
            att("accept", 0, 10),  # tier 0: does not count in the fold either
            att("accept", 1, 10**9),  # out of range: ignored
            att("accept", 1, True),  # not an int
            {"verdict": "accept", "tier": 3, "evidence": b"\x80"},  # held encoded
        ],
    }
    assert rank_mod.drill_bp(row) == 8500
    assert rank_mod.drill_bp({"fix": b"x", "drill": {"success_bp": 9999}}) == 0
    assert rank_mod.drill_bp({"fix": b"x", "drill_bp": 7000}) == 7000


async def test_the_sdk_cache_ranks_the_fixes_the_node_serves_as_the_node_does() -> None:
    """The SDK's stream cache ranked by fix id alone, so streamed agents and agents
    asking the node (canaries, stream=False) applied different fixes."""
    kb, pid, honest, weak = network()

    async def write(kind: str, body: dict[str, Any]) -> None:
        kb.write("ver", kind, body)

    v = Verifier(kb.replica("ver"), kb.key("ver"), write)
    with trio.fail_after(30):
        for row in v.pending():
            assert await v.judge(row) == "accept"
    r = kb.replica("ver")
    rows = [fix_row(r, r.fold.fixes[fid]) for fid in (weak, honest)]
    client = Client(url="http://127.0.0.1:9", token="t" * 20, stream=False)
    try:
        fixes = [Fix.from_json(json.loads(json.dumps(fix_summary(x)))) for x in rows if x]
        client._cache[pid] = {f.id: f for f in fixes}  # what the event stream fills
        cached = client._cached(pid)
        # whichever way the fix ids sort: the verifiers' figure decides the tie
        low = Fix(b"\x01" * 32, pid, {}, "", "low", drill_bp=8_000)
        high = Fix(b"\x02" * 32, pid, {}, "", "low", drill_bp=9_500)
        client._cache[pid] = {low.id: low, high.id: high}
        assert client._cached(pid) is high
    finally:
        client.close()
    best = FixIndex(r).best(pid)
    assert cached is not None and best is not None
    assert cached.id == best["fix"] == honest
