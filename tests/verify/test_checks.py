"""What verifiers check (pure): static safety, reproduced drills, goals, fleet evidence."""

from __future__ import annotations

from typing import Any

import pytest

from gossipmind.core.errors import SchemaError
from gossipmind.core.policy import Policy
from gossipmind.core.schema import fix_id, pattern_id
from gossipmind.learn import synth as synth_mod
from gossipmind.learn.drill import drill
from gossipmind.learn.simulator import FaultModel
from gossipmind.learn.synth import backoff_problem, synthesize, validate
from gossipmind.verify.checks import check_fix, fleet_evidence, judge, wilson_upper_bp

PATTERN = {
    "pattern": pattern_id("search", "query", "timeout", "t"),
    "service": "search",
    "operation": "query",
    "error_class": "timeout",
    "status": {"504": 10},
    "latency_ms_avg": 3000,
    "latency_n": 10,
    "retry_after_ms_max": 0,
    "retry_after_n": 0,
    "count": 10,
    "reporters": 3,
}
RETRY = {
    "scope": "search.query",  # the pattern's scope: service.operation
    "budget_ms": 20000,
    "steps": [
        {
            "type": "retry",
            "max_attempts": 3,
            "base_ms": 100,
            "cap_ms": 1000,
            "jitter": "full",
            "on": ["timeout"],
        }
    ],
}


def row(recipe: dict[str, Any], *, publish: bool = True, **kw: Any) -> dict[str, Any]:
    fid = fix_id(PATTERN["pattern"], recipe)
    out: dict[str, Any] = {
        "fix": fid,
        "pattern": PATTERN["pattern"],
        "recipe": recipe,
        "scope": recipe["scope"],
        "violations": [],
        "successes": 0,
        "attempts": 0,
        "outcome_reporters": 0,
    }
    if publish:
        model = FaultModel.from_pattern(PATTERN)
        out["drill"] = {**drill(recipe, model, fid).to_body(), "model": model.to_body()}
    out.update(kw)
    return out


def test_a_good_fix_reproduces_and_is_accepted() -> None:
    v = check_fix(row(RETRY), PATTERN, Policy())
    assert v.accept, v.reasons
    assert v.evidence["drill_success_bp"] > v.evidence["drill_baseline_success_bp"]


def test_tampered_drill_figures_are_caught_and_never_decide_the_verdict() -> None:
    """Bogus figures are recorded against the proposer, but the recipe is judged on
    its own drill: fixes merge by id, so rejecting the figures would let a member
    who proposed a predictable recipe first get it rejected for everyone."""
    r = row(RETRY)
    r["drill"]["success_bp"] = 1
    v = check_fix(r, PATTERN, Policy())
    assert v.accept, v.reasons
    assert v.evidence["published_drill"] == "differ"
    assert any("published drill is wrong" in x for x in v.reasons)
    assert check_fix(row(RETRY), PATTERN, Policy()).evidence["published_drill"] == "reproduced"


def test_the_drill_uses_the_pattern_s_model_not_the_proposer_s() -> None:
    """A recipe that retries only server errors cannot fix a timeout pattern, whatever
    model its proposer published (one where server errors are what fails)."""
    useless = {**RETRY, "steps": [{**RETRY["steps"][0], "on": ["server_error"]}]}
    fid = fix_id(PATTERN["pattern"], useless)
    forged = FaultModel(failure_bp={"server_error": 5000})
    claimed = drill(useless, forged, fid)
    assert claimed.better_than_baseline  # under the forged model it looks good
    r = row(useless, publish=False, drill={**claimed.to_body(), "model": forged.to_body()})
    v = check_fix(r, PATTERN, Policy())
    assert not v.accept and "not above the baseline" in v.reasons[0]
    assert v.evidence["published_drill"] == "other model"
    assert v.evidence["drill_model"] == FaultModel.from_pattern(PATTERN).to_body()
    # a good recipe published with a model that makes it look bad is still accepted
    hostile = FaultModel(failure_bp={"validation": 9000, "timeout": 1000})
    bad = drill(RETRY, hostile, fid)
    v = check_fix(
        row(RETRY, drill={**bad.to_body(), "model": hostile.to_body()}), PATTERN, Policy()
    )
    assert v.accept, v.reasons


@pytest.mark.parametrize(
    "model",
    [
        {"failure_bp": 5},
        {"failure_bp": "xy"},
        {"failure_bp": {"timeout": True}},
        {"failure_bp": {"timeout": "1"}},
        {"burst_period_ms": "x"},
        {"burst_len_ms": None},
        {"burst_class": ["timeout"]},
        {"hang_ms": -1},
        [1, 2],
    ],
)
def test_a_malformed_published_model_is_a_note_not_a_crash(model: Any) -> None:
    with pytest.raises(SchemaError):
        FaultModel.from_body(model)
    r = row(RETRY)
    r["drill"]["model"] = model
    v = check_fix(r, PATTERN, Policy())
    assert v.accept and v.evidence["published_drill"] == "invalid model"


def test_without_the_pattern_a_verifier_waits() -> None:
    assert judge(row(RETRY), None, Policy(), tier=1) is None


def test_retrying_a_validation_error_is_rejected() -> None:
    bad = {**PATTERN, "error_class": "validation"}
    v = check_fix(row(RETRY), bad, Policy())
    assert not v.accept and "cannot fix a validation error" in v.reasons[0]


def test_non_idempotent_retry_without_key_is_rejected() -> None:
    charge = {**PATTERN, "service": "payments", "operation": "charge"}
    charge["pattern"] = pattern_id("payments", "charge", "timeout", "t")
    recipe = {**RETRY, "scope": "payments.charge"}
    v = check_fix(row(recipe, publish=False), charge, Policy())
    assert not v.accept and "without an idempotency key" in v.reasons[0]


def test_goal_violations_are_reasons_to_reject() -> None:
    v = check_fix(
        row(RETRY, violations=[[b"g" * 32, "retry.max_attempts = 3 breaks <= 2"]]),
        PATTERN,
        Policy(),
    )
    assert not v.accept and "breaks an active goal" in v.reasons[0]


def test_senior_verifiers_wait_for_fleet_evidence() -> None:
    policy = Policy(evidence_min_reporters=3, evidence_min_success_bp=8000)
    assert judge(row(RETRY), PATTERN, policy, tier=1) is not None  # tier 1: drill is enough
    assert judge(row(RETRY), PATTERN, policy, tier=2) is None  # no outcomes yet: wait
    good = row(RETRY, successes=95, attempts=100, outcome_reporters=3)
    v = judge(good, PATTERN, policy, tier=2)
    assert v is not None and v.accept and v.evidence["fleet_lower_bp"] >= 8000
    bad = row(RETRY, successes=10, attempts=100, outcome_reporters=4)
    v = judge(bad, PATTERN, policy, tier=2)
    assert v is not None and not v.accept
    unsure = row(RETRY, successes=8, attempts=10, outcome_reporters=3)
    assert judge(unsure, PATTERN, policy, tier=2) is None


def test_fleet_evidence_bounds() -> None:
    policy = Policy(evidence_min_reporters=2, evidence_min_success_bp=8000)
    assert (
        fleet_evidence(row(RETRY, successes=1, attempts=1, outcome_reporters=1), policy)[0]
        == "wait"
    )
    assert (
        fleet_evidence(row(RETRY, successes=0, attempts=40, outcome_reporters=2), policy)[0]
        == "bad"
    )
    assert wilson_upper_bp(0, 0) == 10_000 and wilson_upper_bp(10, 10) == 10_000
    assert wilson_upper_bp(0, 100) < 500


@pytest.mark.parametrize(
    "header",
    ["Authorization", "Cookie", "Host", "X-Api-Key", "Idempotency-Key\r\nX-Evil: 1", "a b"],
)
def test_an_idempotency_key_step_may_not_name_another_header(header: str) -> None:
    """The op schema allows any header name; the executor would set it on the agent's
    own request (replacing its credentials), so verifiers reject all but key headers."""
    recipe = {**RETRY, "steps": [{"type": "idempotency_key", "header": header}, *RETRY["steps"]]}
    v = check_fix(row(recipe), PATTERN, Policy())
    assert not v.accept and v.reasons[0].startswith("idempotency_key: header")


@pytest.mark.parametrize("header", ["Idempotency-Key", "X-Idempotency-Key", "PayPal-Request-Id"])
def test_idempotency_key_headers_are_allowed(header: str) -> None:
    recipe = {**RETRY, "steps": [{"type": "idempotency_key", "header": header}, *RETRY["steps"]]}
    v = check_fix(row(recipe), PATTERN, Policy())
    assert v.accept, v.reasons


def rate_limited_pattern(retry_after_ms: int) -> dict[str, Any]:
    return {
        **PATTERN,
        "pattern": pattern_id("search", "query", "rate_limited", "t"),
        "error_class": "rate_limited",
        "status": {"429": 10},
        "latency_ms_avg": 200,
        "retry_after_ms_max": retry_after_ms,
        "retry_after_n": 10,
    }


@pytest.mark.parametrize("retry_after_ms", [2000, 5000, 10_000, 60_000])
def test_the_rule_fix_for_a_429_with_retry_after_is_accepted(retry_after_ms: int) -> None:
    # With 4 attempts the rule's own recipe amplified calls more than 3x in its
    # drill once Retry-After reached a few seconds: a 429 never got a fix.
    p = rate_limited_pattern(retry_after_ms)
    (cand,) = synthesize(p, Policy()).candidates
    fix = {"fix": fix_id(p["pattern"], cand.recipe), "recipe": cand.recipe, "violations": []}
    v = check_fix(fix, p, Policy())
    assert v.accept, v.reasons


@pytest.mark.parametrize("retry_after_ms", [0, 150, 500, 1000, 2000, 5000, 10_000, 60_000])
def test_the_rate_limit_rule_retries_4_times_exactly_when_verifiers_accept_4(
    retry_after_ms: int,
) -> None:
    # 3 attempts leave 0.3^3 = 2.7 % of calls failed where 30 % of attempts fail,
    # 4 leave 0.8 %: the rule takes the 4th wherever its drill stays under the cap
    p = rate_limited_pattern(retry_after_ms)
    (cand,) = synthesize(p, Policy()).candidates
    (retry,) = [s for s in cand.recipe["steps"] if s["type"] == "retry"]
    made = synth_mod._rate_limited_rule(p, "search.query", synth_mod.RATE_LIMIT_MORE)
    more = synth_mod.RuleSynthesizer()._candidate(made, "search.query", Policy()).recipe
    verdict = check_fix(
        {"fix": fix_id(p["pattern"], more), "recipe": more, "violations": []}, p, Policy()
    )
    assert retry["max_attempts"] == (4 if verdict.accept else 3), verdict.reasons
    chosen = check_fix(
        {"fix": fix_id(p["pattern"], cand.recipe), "recipe": cand.recipe, "violations": []},
        p,
        Policy(),
    )
    assert chosen.accept, chosen.reasons
    if retry_after_ms <= 1000:  # a short wait: the 4th attempt is taken
        assert retry["max_attempts"] == 4


def test_a_retry_without_backoff_is_rejected_and_never_synthesized() -> None:
    """The s10 learning review (S5): a member's timeout fix retrying 4 times 1 ms apart
    without jitter, escalating every final failure, passed every check and outranked
    the network's own fix (drill success) in 17 of 20 patterns."""
    hammer = {
        "scope": "search.query",
        "budget_ms": 20000,
        "steps": [
            {
                "type": "retry",
                "max_attempts": 4,
                "base_ms": 1,
                "cap_ms": 1,
                "jitter": "none",
                "on": ["timeout"],
            },
            {"type": "escalate", "to": "pagerduty"},
        ],
    }
    fix = {"fix": fix_id(PATTERN["pattern"], hammer), "recipe": hammer, "violations": []}
    v = check_fix(fix, PATTERN, Policy())
    assert not v.accept and v.reasons == [
        "retries after 1 ms: a retry must back off from at least 100 ms"
    ]
    unjittered = {**RETRY, "steps": [RETRY["steps"][0] | {"base_ms": 200, "jitter": "none"}]}
    fix = {"fix": fix_id(PATTERN["pattern"], unjittered), "recipe": unjittered, "violations": []}
    assert any("without jitter" in r for r in check_fix(fix, PATTERN, Policy()).reasons)
    with pytest.raises(SchemaError, match="back off"):  # a plug-in's output is dropped
        validate({"recipe": hammer, "rationale": "hammer"}, PATTERN, Policy(), "x")
    # the network's own recipes back off, whatever the class
    for error_class in ("timeout", "server_error", "connection", "rate_limited"):
        p = {**PATTERN, "error_class": error_class}
        for cand in synthesize(p, Policy()).candidates:
            assert backoff_problem(cand.recipe) is None, (error_class, cand.recipe)


def test_a_retry_that_ignores_retry_after_is_rejected() -> None:
    p = rate_limited_pattern(5000)
    hammer = {
        "scope": "search.query",
        "budget_ms": 20000,
        "steps": [
            {
                "type": "retry",
                "max_attempts": 3,
                "base_ms": 1,
                "cap_ms": 1,
                "jitter": "none",
                "on": ["rate_limited"],
            }
        ],
    }
    fix = {"fix": fix_id(p["pattern"], hammer), "recipe": hammer, "violations": []}
    v = check_fix(fix, p, Policy())
    assert not v.accept and any("Retry-After" in r for r in v.reasons), v.reasons
    # a 5xx pattern whose service sends Retry-After: the same
    p5 = {**p, "error_class": "server_error", "status": {"503": 10}}
    hammer["steps"][0]["on"] = ["server_error"]
    v = check_fix({**fix, "recipe": hammer}, p5, Policy())
    assert not v.accept and any("Retry-After" in r for r in v.reasons), v.reasons
    # waiting as asked is fine
    waits = {
        **hammer,
        "steps": [*hammer["steps"], {"type": "respect_retry_after", "max_wait_ms": 9000}],
    }
    waits["steps"][0] = {
        **hammer["steps"][0],
        "on": ["rate_limited"],
        "base_ms": 1000,
        "cap_ms": 8000,
    }
    v = check_fix({**fix, "fix": fix_id(p["pattern"], waits), "recipe": waits}, p, Policy())
    assert not any("Retry-After" in r for r in v.reasons), v.reasons


@pytest.mark.parametrize(
    ("pattern", "steps", "on"),
    [
        (PATTERN, [], ["timeout"]),
        (
            rate_limited_pattern(1000),
            [{"type": "respect_retry_after", "max_wait_ms": 300_000}],
            ["rate_limited"],
        ),
    ],
)
def test_a_fix_that_makes_every_call_wait_minutes_is_rejected(
    pattern: dict[str, Any], steps: list[dict[str, Any]], on: list[str]
) -> None:
    # It beats the baseline and amplifies nothing: it used to be accepted (low
    # risk, one tier-1 verifier) and could rank above the network's own fix.
    slow = {
        "scope": "search.query",
        "budget_ms": 600_000,
        "steps": [
            *steps,
            {
                "type": "retry",
                "max_attempts": 3,
                "base_ms": 60_000,
                "cap_ms": 300_000,
                "jitter": "equal",
                "on": on,
            },
        ],
    }
    fix = {"fix": fix_id(pattern["pattern"], slow), "recipe": slow, "violations": []}
    v = check_fix(fix, pattern, Policy())
    assert v.evidence["drill_success_bp"] > v.evidence["drill_baseline_success_bp"]
    assert not v.accept and any("adds" in r for r in v.reasons), v.reasons
    # the network's own recipe for the pattern passes the same bound
    (cand,) = synthesize(pattern, Policy()).candidates
    own = {"fix": fix_id(pattern["pattern"], cand.recipe), "recipe": cand.recipe, "violations": []}
    assert check_fix(own, pattern, Policy()).accept


@pytest.mark.parametrize(
    ("error_class", "on"),
    [("conflict", ["conflict"]), ("unknown", ["unknown"]), ("timeout", ["timeout", "unknown"])],
)
def test_a_retry_the_drill_cannot_judge_is_rejected(error_class: str, on: list[str]) -> None:
    # The drill fails attempts at random whatever their class, so these beat
    # the baseline and were accepted: a retry of "already exists" or of a
    # KeyError from a changed schema fails the same way every time.
    p = {**PATTERN, "error_class": error_class, "status": {}}
    recipe = {**RETRY, "steps": [{**RETRY["steps"][0], "on": on}]}
    v = check_fix(
        {"fix": fix_id(p["pattern"], recipe), "recipe": recipe, "violations": []}, p, Policy()
    )
    assert not v.accept and any("transient" in r for r in v.reasons), v.reasons
