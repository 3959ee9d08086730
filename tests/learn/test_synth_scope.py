"""A candidate's scope must be its pattern's service.operation: the fold rejects a
fix for any other scope (protocol.md §6.5), so a synthesizer's output naming
another one is dropped with the reason before it is drilled or proposed."""

from __future__ import annotations

from typing import Any

import pytest

from gossipmind.core.errors import SchemaError
from gossipmind.core.policy import Policy
from gossipmind.core.schema import pattern_id
from gossipmind.learn.synth import Candidate, synthesize, validate

PATTERN = {
    "pattern": pattern_id("weather", "get", "server_error", "t"),
    "service": "weather",
    "operation": "get",
    "error_class": "server_error",
    "count": 10,
    "reporters": 3,
}
RETRY = {
    "type": "retry",
    "max_attempts": 2,
    "base_ms": 100,
    "cap_ms": 100,
    "jitter": "full",
    "on": ["server_error"],
}


def recipe(scope: str) -> dict[str, Any]:
    return {"scope": scope, "steps": [RETRY], "budget_ms": 5000}


@pytest.mark.parametrize("scope", ["weather", "weather.get.eu", "weather.put", "search"])
def test_a_candidate_for_another_scope_than_the_pattern_s_is_refused(scope: str) -> None:
    with pytest.raises(SchemaError) as err:
        validate({"recipe": recipe(scope), "rationale": "x"}, PATTERN, Policy(), "llm")
    assert str(err.value) == (
        f"recipe.scope: {scope!r} is not the pattern's scope 'weather.get' (service.operation)"
    )


def test_the_pattern_s_scope_is_accepted_and_rules_always_emit_it() -> None:
    cand = validate({"recipe": recipe("weather.get"), "rationale": "x"}, PATTERN, Policy(), "llm")
    assert isinstance(cand, Candidate) and cand.recipe["scope"] == "weather.get"
    for cls in ("timeout", "rate_limited", "server_error", "connection", "auth", "validation"):
        made = synthesize({**PATTERN, "error_class": cls}, Policy())
        assert made.rejected == [] and made.candidates
        assert {c.recipe["scope"] for c in made.candidates} == {"weather.get"}


def test_a_pattern_without_service_and_operation_takes_no_candidate() -> None:
    for pattern in ({"service": "weather"}, {"operation": "get"}, {}):
        with pytest.raises(SchemaError, match="service and operation are required"):
            validate({"recipe": recipe("weather.get"), "rationale": "x"}, pattern, Policy(), "x")
