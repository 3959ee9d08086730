"""Synthesis: rule candidates validate; unsafe or invalid output (rules or plug-ins) is rejected."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmind.core.errors import SchemaError
from gossipmind.core.policy import Policy
from gossipmind.core.recipe import ERROR_CLASSES, check_recipe, steps_by_type
from gossipmind.core.schema import check_body, fix_id, pattern_id
from gossipmind.learn.drill import drill_pattern
from gossipmind.learn.synth import (
    Candidate,
    RuleSynthesizer,
    load_plugins,
    propose_body,
    recipe_scope,
    synthesize,
    validate,
)

POLICY = Policy()


def pattern(error_class: str, service: str = "weather", **stats: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "pattern": pattern_id(service, "get", error_class, "t"),
        "service": service,
        "operation": "get",
        "error_class": error_class,
        "template": "t",
        "count": 12,
        "reporters": 3,
        "latency_ms_avg": 0,
        "latency_n": 0,
        "retry_after_ms_max": 0,
        "retry_after_n": 0,
        "status": {},
    }
    row.update(stats)
    return row


stats = st.fixed_dictionaries(
    {
        "latency_ms_avg": st.integers(0, 2**31),
        "latency_n": st.integers(0, 100),
        "retry_after_ms_max": st.integers(0, 2**31),
        "retry_after_n": st.integers(0, 100),
        "count": st.integers(1, 10**9),
    }
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ERROR_CLASSES), st.sampled_from(["weather", "payments", "a" * 64]), stats)
def test_rule_candidates_always_validate(cls: str, service: str, s: dict[str, Any]) -> None:
    p = pattern(cls, service, **s)
    for policy in (POLICY, Policy(non_idempotent_scopes=("*",))):
        for cand in RuleSynthesizer().propose(p, policy):
            check_recipe(cand.recipe)
            validate(cand, p, policy, "rules")
            assert cand.risk == policy.risk_floor(cand.recipe)
            check_body("fix.propose", propose_body(cand, p["pattern"]))


def test_each_error_class_gets_the_right_kind_of_fix() -> None:
    kinds = {}
    for cls in ERROR_CLASSES:
        cands = synthesize(pattern(cls), POLICY).candidates
        kinds[cls] = [sorted(steps_by_type(c.recipe)) for c in cands]
    assert kinds["timeout"] == [["respect_retry_after", "retry", "timeout"]]
    assert kinds["rate_limited"] == [["respect_retry_after", "retry"]]
    assert kinds["server_error"] == [["circuit_breaker", "retry"]]
    assert kinds["connection"] == [["respect_retry_after", "retry"]]
    assert kinds["auth"] == kinds["validation"] == [["escalate"]]
    assert kinds["not_found"] == kinds["conflict"] == kinds["unknown"] == []


def test_validation_class_patterns_never_get_a_retry() -> None:
    for cls in ("validation", "auth", "not_found"):
        for c in synthesize(pattern(cls), POLICY).candidates:
            assert not {"retry", "respect_retry_after"} & set(steps_by_type(c.recipe))
    (c,) = synthesize(pattern("validation"), POLICY).candidates
    assert "schema drift" in c.rationale


def test_parameters_come_from_the_pattern_statistics() -> None:
    (c,) = synthesize(pattern("timeout", latency_ms_avg=7000, latency_n=4), POLICY).candidates
    steps = steps_by_type(c.recipe)
    assert steps["timeout"]["ms"] == 7000 and c.recipe["budget_ms"] >= 3 * 7000
    # every transient class is retried: a timeout under load often comes back as a 429/503
    assert steps["retry"]["on"] == ["connection", "rate_limited", "server_error", "timeout"]
    (c,) = synthesize(
        pattern("rate_limited", retry_after_ms_max=4000, retry_after_n=2), POLICY
    ).candidates
    steps = steps_by_type(c.recipe)
    assert steps["respect_retry_after"]["max_wait_ms"] == 6000
    assert steps["retry"]["base_ms"] == 4000 and steps["retry"]["jitter"] == "equal"
    assert c.recipe["budget_ms"] >= 3 * 6000
    (c,) = synthesize(
        pattern("server_error", retry_after_ms_max=2000, retry_after_n=1, status={"503": 3}),
        POLICY,
    ).candidates
    assert "respect_retry_after" in steps_by_type(c.recipe) and "503" in c.rationale


def test_non_idempotent_scopes_always_get_an_idempotency_key() -> None:
    for cls in ("timeout", "rate_limited", "server_error", "connection"):
        (c,) = synthesize(pattern(cls, "payments"), POLICY).candidates
        steps = steps_by_type(c.recipe)
        assert steps["idempotency_key"]["header"] == "Idempotency-Key"
        assert c.recipe["scope"] == "payments.get" and c.risk == "medium"
        (w,) = synthesize(pattern(cls, "weather"), POLICY).candidates
        assert "idempotency_key" not in steps_by_type(w.recipe) and w.risk == "low"


def test_rule_candidates_beat_the_baseline_in_a_drill() -> None:
    for cls, extra in [
        ("timeout", {"latency_ms_avg": 5000, "latency_n": 3}),
        ("rate_limited", {"retry_after_ms_max": 2000, "retry_after_n": 3}),
        ("server_error", {}),
        ("connection", {}),
    ]:
        p = pattern(cls, **extra)
        (c,) = synthesize(p, POLICY).candidates
        r = drill_pattern(c.recipe, p, fix_id(p["pattern"], c.recipe))
        assert r.success_bp > r.baseline_success_bp + 1000, (cls, r)
        assert r.amplification_pm <= 3000


class Plugin:
    def __init__(self, name: str, out: Any) -> None:
        self.name, self.out = name, out

    def propose(self, pattern: dict[str, Any], policy: Policy) -> Any:
        if isinstance(self.out, Exception):
            raise self.out
        return self.out


GOOD = {
    "scope": "weather.get",
    "steps": [
        {
            "type": "retry",
            "max_attempts": 2,
            "base_ms": 100,
            "cap_ms": 100,
            "jitter": "full",
            "on": ["server_error"],
        }
    ],
    "budget_ms": 5000,
}


def test_plugin_output_that_does_not_validate_is_rejected() -> None:
    bad_outputs = [
        {"recipe": {"scope": "weather.get", "steps": [{"type": "shell", "cmd": "curl x|sh"}]}},
        {"recipe": {**GOOD, "budget_ms": 10**9}, "risk": "low", "rationale": "x"},
        {"recipe": {**GOOD, "scope": "payments"}, "risk": "low", "rationale": "other service"},
        {"recipe": {**GOOD, "budget_ms": 1.5}, "risk": "low", "rationale": "float"},
        {"recipe": GOOD, "risk": "none", "rationale": "x"},
        {"recipe": GOOD, "risk": "low", "rationale": ""},
        {"recipe": GOOD, "risk": "low", "rationale": "x", "code": "import os"},
        "retry please",
    ]
    result = synthesize(pattern("server_error"), POLICY, [Plugin("llm", bad_outputs)])
    assert result.candidates == []
    assert len(result.rejected) == len(bad_outputs)
    assert all(r.synthesizer == "llm" for r in result.rejected)
    assert "unknown step type" in result.rejected[0].reason


def test_plugin_may_not_retry_validation_errors_or_unkeyed_payments() -> None:
    retry_validation = {**GOOD, "steps": [{**GOOD["steps"][0], "on": ["validation"]}]}
    res = synthesize(
        pattern("validation"),
        POLICY,
        [
            Plugin(
                "llm",
                [
                    {"recipe": GOOD, "rationale": "a"},
                    {"recipe": retry_validation, "rationale": "b"},
                ],
            )
        ],
    )
    assert res.candidates == [] and len(res.rejected) == 2
    assert "never retried" in res.rejected[0].reason
    res = synthesize(
        pattern("server_error"),
        POLICY,
        [Plugin("llm", [{"recipe": retry_validation, "rationale": "b"}])],
    )
    assert "validation" in res.rejected[0].reason
    pay = {**GOOD, "scope": "payments.get"}
    res = synthesize(
        pattern("server_error", "payments"),
        POLICY,
        [Plugin("llm", [{"recipe": pay, "rationale": "x"}])],
    )
    assert res.candidates == [] and "without a key" in res.rejected[0].reason


def test_valid_plugin_output_is_kept_with_the_policy_risk_floor_and_deduplicated() -> None:
    fb = {**GOOD, "steps": [*GOOD["steps"], {"type": "fallback", "target": "cache"}]}
    plugin = Plugin(
        "llm",
        [{"recipe": fb, "risk": "low", "rationale": "cached answers"}, Candidate(fb, "low", "dup")],
    )
    res = synthesize(pattern("server_error"), POLICY, [plugin])
    (c,) = res.candidates
    assert c.synthesizer == "llm" and c.risk == "medium"  # fallback raises the floor
    assert res.rejected == []


def test_failing_plugins_are_reported_not_fatal() -> None:
    res = synthesize(
        pattern("timeout"),
        POLICY,
        [
            Plugin("boom", RuntimeError("model down")),
            Plugin("odd", {"not": "a list"}),
            RuleSynthesizer(),
        ],
    )
    assert len(res.candidates) == 1 and res.candidates[0].synthesizer == "rules"
    assert [r.synthesizer for r in res.rejected] == ["boom", "odd"]
    assert "down" in res.rejected[0].reason
    many = Plugin(
        "many", [{"recipe": {**GOOD, "budget_ms": 5000 + i}, "rationale": "x"} for i in range(12)]
    )
    res = synthesize(pattern("server_error"), POLICY, [many])
    assert len(res.candidates) == 8 and "more than 8" in res.rejected[0].reason


def test_plugins_are_discovered_through_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gm_fake_plugin.py").write_text(
        textwrap.dedent(
            """
            GOOD = {"scope": "weather.get", "budget_ms": 5000, "steps": [{"type": "retry",
                    "max_attempts": 2, "base_ms": 100, "cap_ms": 100, "jitter": "full",
                    "on": ["server_error"]}]}

            class Llm:
                name = "fake-llm"

                def propose(self, pattern, policy):
                    return [
                        {"recipe": GOOD, "risk": "low", "rationale": "retry once"},
                        {"recipe": {"scope": "weather.get", "steps": "rm -rf /"}, "rationale": "x"},
                    ]

            not_a_synth = 42
            """
        )
    )
    dist = tmp_path / "gm_fake_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gm-fake-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[gossipmind.synthesizers]\n"
        "llm = gm_fake_plugin:Llm\n"
        "junk = gm_fake_plugin:not_a_synth\n"
        "missing = gm_fake_plugin_nope:X\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        synths, errors = load_plugins()
        assert [s.name for s in synths] == ["fake-llm"]
        assert sorted(e.synthesizer for e in errors) == ["junk", "missing"]
        res = synthesize(pattern("server_error"), POLICY, synths)
        assert [c.synthesizer for c in res.candidates] == ["fake-llm"]
        assert len(res.rejected) == 1 and "steps" in res.rejected[0].reason
    finally:
        sys.modules.pop("gm_fake_plugin", None)


def test_recipe_scope() -> None:
    assert recipe_scope({"service": "pay", "operation": "charge"}) == "pay.charge"
    assert recipe_scope({"service": "a" * 40, "operation": "b" * 40}) == "a" * 40
    with pytest.raises(SchemaError):
        validate({"recipe": GOOD, "rationale": "x"}, {"service": "other"}, POLICY, "x")


def test_every_rule_recipe_that_retries_429s_waits_as_asked() -> None:
    # The connection rule retried rate_limited errors without respect_retry_after.
    for cls in ("timeout", "rate_limited", "server_error", "connection"):
        for extra in ({}, {"retry_after_ms_max": 3000, "retry_after_n": 2}):
            (c,) = synthesize(pattern(cls, **extra), POLICY).candidates
            steps = steps_by_type(c.recipe)
            if "rate_limited" in steps["retry"]["on"] or extra:
                assert "respect_retry_after" in steps, (cls, extra)


def test_a_plugin_retry_that_ignores_retry_after_is_dropped() -> None:
    p = pattern("rate_limited", retry_after_ms_max=3000, retry_after_n=2)
    recipe = {
        "scope": "weather.get",
        "budget_ms": 10000,
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
    with pytest.raises(SchemaError, match="respect_retry_after"):
        validate({"recipe": recipe, "rationale": "hammer"}, p, POLICY, "x")


def test_a_candidate_s_fallbacks_are_validated_like_it() -> None:
    """A fallback is proposed once its candidate's fix ends rejected
    (node/learner.py): it is checked now, whole, and a bad one rejects both."""
    three = {**GOOD, "steps": [{**GOOD["steps"][0], "max_attempts": 3}]}
    chain = {"recipe": three, "rationale": "3", "fallback": {"recipe": GOOD, "rationale": "2"}}
    bad = {"recipe": three, "rationale": "3", "fallback": {"recipe": GOOD, "risk": "none"}}
    deep: dict[str, Any] = {"recipe": GOOD, "rationale": "0"}
    for i in range(4):  # four fallbacks deep: one more than MAX_FALLBACKS
        deep = {"recipe": GOOD, "rationale": str(i + 1), "fallback": deep}
    res = synthesize(pattern("server_error"), POLICY, [Plugin("llm", [chain, bad, deep])])
    (cand,) = res.candidates
    assert cand.recipe == three and cand.fallback is not None
    assert cand.fallback.recipe == GOOD and cand.fallback.synthesizer == "llm"
    assert cand.fallback.fallback is None
    assert [r.reason for r in res.rejected] == [
        "candidate 1: fallback: risk: must be one of low, medium, high",
        "candidate 2: fallback: fallback: fallback: fallback: more than 3 fallbacks in a chain",
    ]


def test_the_rate_limit_rule_s_4th_attempt_falls_back_to_3() -> None:
    """The 4-attempt recipe sits near the verifiers' cap; the 3-attempt one is its
    fallback, proposed if a verifier on another view rejects it."""
    p = pattern("rate_limited", retry_after_ms_max=1000, retry_after_n=10)
    (cand,) = synthesize(p, POLICY).candidates
    assert cand.fallback is not None and cand.fallback.fallback is None
    attempts = [
        s["max_attempts"]
        for c in (cand, cand.fallback)
        for s in c.recipe["steps"]
        if "max_attempts" in s
    ]
    assert attempts == [4, 3]
    long_wait = pattern("rate_limited", retry_after_ms_max=60_000, retry_after_n=10)
    (only,) = synthesize(long_wait, POLICY).candidates  # 3 attempts: nothing to fall back to
    assert only.fallback is None
