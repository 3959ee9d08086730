"""A step's ``type`` is not one of its parameters (protocol.md §4.11, §6.6).

A comparison constraint names ``step.param``; v is "that parameter of R's step
of that type", and "if v is absent (no such parameter), c holds". The fold read
the step's ``type`` key as a parameter: ``retry.type = "x"`` (a valid
constraint: ``field`` is any name) broke every recipe that retries, and an
active goal holding it blocked every retry fix in its scope, where an
implementation following the text leaves them unblocked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gossipmind.core.goals import Goal, resolve, violation, violations
from gossipmind.core.schema import pattern_id
from gossipmind.core.snapshot import snapshot
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, sample_recipe

TYPE_FIELDS = [
    {"op": "=", "field": "retry.type", "value": "x"},
    {"op": "=", "field": "retry.type", "value": 1},
    {"op": "<=", "field": "retry.type", "value": "a"},
    {"op": ">=", "field": "idempotency_key.type", "value": "z"},
    {"op": "=", "field": "idempotency_key.type", "value": True},
]


@pytest.mark.parametrize("c", TYPE_FIELDS, ids=lambda c: f"{c['field']}{c['op']}{c['value']}")
def test_a_constraint_on_a_step_type_always_holds(c: dict[str, Any]) -> None:
    recipe = sample_recipe("search", idempotent=True)
    assert violation(recipe, c) is None
    g = Goal(b"\x01" * 32, "search", 1, (c,), "g")
    assert violations(recipe, [g], resolve([g])) == []


def test_parameters_are_still_compared() -> None:
    recipe = sample_recipe("search", attempts=3)
    assert violation(recipe, {"op": "<=", "field": "retry.max_attempts", "value": 2})
    assert violation(recipe, {"op": "=", "field": "retry.jitter", "value": "none"})
    assert violation(recipe, {"op": "=", "field": "retry.on", "value": "timeout"})  # an array
    assert violation(recipe, {"op": "=", "field": "retry.nothing", "value": 1}) is None


def test_an_active_goal_on_retry_type_blocks_no_fix(tmp_path: Path) -> None:
    """Through a real store: an approved goal `retry.type = "x"` on search, and a
    retry fix for search that a verifier accepts: the fix is accepted, not blocked."""
    kb = KB(seed=9)
    kb.grant("admin", "a", "member")
    kb.grant("admin", "v", "verifier", tier=2, scopes=("*",))
    kb.sync("admin", "a")
    kb.sync("admin", "v")
    goal = kb.write(
        "a",
        "goal.set",
        {
            "title": "retry type",
            "scope": "search",
            "priority": 1,
            "retired": False,
            "constraints": [{"op": "=", "field": "retry.type", "value": "x"}],
        },
    )
    kb.sync("a", "v")
    review = {"goal": goal.id, "version": goal.id, "verdict": "approve", "comment": ""}
    kb.write("v", "goal.review", review)
    pattern = kb.report("a", template="t").body["pattern"]  # a fix needs its pattern's scope
    assert pattern == pattern_id("search", "query", "timeout", "t")
    fid = kb.propose("a", pattern, sample_recipe("search.query"))
    kb.sync("a", "v")
    kb.write("v", "fix.attest", kb.attest_body(fid, "search"))
    path = tmp_path / "kb.sqlite3"
    with Store.create(path, kb.genesis, synchronous="OFF") as store:
        store.ingest(kb.ops[1:], verified=True)
        state = snapshot(store.replica)
    (g,) = state["goals"]
    assert g["active"]
    (fix,) = state["fixes"]
    assert (fix["status"], fix["violations"]) == ("accepted", [])
    with Store.open(path) as store:
        row = store.conn.execute("SELECT status FROM fixes WHERE fix = ?", (fid,)).fetchone()
    assert row == ("accepted",)
