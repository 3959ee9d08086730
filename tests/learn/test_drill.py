"""Drills: deterministic from the fix id, across processes; results fit the propose schema."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from gossipmind.core import encoding
from gossipmind.core.schema import check_body, fix_id, pattern_id
from gossipmind.learn.drill import DrillResult, drill, drill_pattern, drill_seed
from gossipmind.learn.simulator import FaultModel

PATTERN = pattern_id("payments", "charge", "timeout", "charge timed out after <*>")
RETRY = {
    "type": "retry",
    "max_attempts": 3,
    "base_ms": 200,
    "cap_ms": 2000,
    "jitter": "full",
    "on": ["connection", "timeout"],
}
RECIPE: dict[str, Any] = {
    "scope": "payments.charge",
    "steps": [
        RETRY,
        {"type": "timeout", "ms": 2000},
        {"type": "idempotency_key", "header": "Idempotency-Key"},
    ],
    "budget_ms": 12_000,
}
MODEL = FaultModel(
    failure_bp={"timeout": 2500, "connection": 500},
    latency_median_ms=150,
    latency_p95_ms=900,
    hang_ms=10_000,
    burst_period_ms=120_000,
    burst_len_ms=10_000,
    burst_class="server_error",
)

SCRIPT = """
import sys
from gossipmind.core import encoding
from gossipmind.core.schema import fix_id, pattern_id
from gossipmind.learn.drill import drill
from gossipmind.learn.simulator import FaultModel
sys.path.insert(0, {here!r})
import test_drill as t
fid = fix_id(t.PATTERN, t.RECIPE)
r = drill(t.RECIPE, t.MODEL, fid, idempotent=False)
print(encoding.encode([r.to_body(), r.latency_ms_avg, r.max_attempts_seen]).hex())
"""


def encoded(result: DrillResult) -> bytes:
    return encoding.encode([result.to_body(), result.latency_ms_avg, result.max_attempts_seen])


def test_same_fix_id_gives_byte_identical_results_in_two_processes() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    outs = []
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT.format(here=here)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        )
        outs.append(proc.stdout.strip())
    local = drill(RECIPE, MODEL, fix_id(PATTERN, RECIPE), idempotent=False)
    assert outs[0] == outs[1] == encoded(local).hex()


def test_same_fix_id_same_result_in_process_and_another_id_differs() -> None:
    fid = fix_id(PATTERN, RECIPE)
    a = drill(RECIPE, MODEL, fid, idempotent=False)
    b = drill(RECIPE, MODEL, fid, idempotent=False)
    assert encoded(a) == encoded(b)
    c = drill(RECIPE, MODEL, fix_id(PATTERN, {**RECIPE, "budget_ms": 12_001}), idempotent=False)
    assert encoded(a) != encoded(c)
    assert drill_seed(fid) == drill_seed(bytes(fid)) != drill_seed(fid[:-1] + b"\x00")


def test_result_fits_the_fix_propose_schema() -> None:
    fid = fix_id(PATTERN, RECIPE)
    r = drill(RECIPE, MODEL, fid, idempotent=False)
    body = {
        "pattern": PATTERN,
        "recipe": RECIPE,
        "risk": "medium",
        "rationale": "retry with a key",
        "origin": "synth",
        "drill": r.to_body(),
    }
    check_body("fix.propose", body)
    assert all(type(v) is int for v in r.to_body().values())
    assert r.runs == 200


def test_a_good_recipe_beats_the_baseline_and_amplification_is_bounded() -> None:
    r = drill(RECIPE, MODEL, fix_id(PATTERN, RECIPE), idempotent=False)
    assert r.better_than_baseline and r.success_bp > 8500  # bursts (server_error) not retried
    assert r.baseline_success_bp < 8000
    assert 1000 < r.amplification_pm <= 3000 and r.max_attempts_seen <= 3
    # hung calls are cut at 2 s instead of 10 s: the recipe is faster than the baseline
    assert r.latency_ms_avg < r.baseline_latency_ms_avg and r.added_latency_ms == 0


def test_non_idempotent_without_key_gains_nothing() -> None:
    recipe = {**RECIPE, "steps": [RETRY, {"type": "timeout", "ms": 2000}]}
    r = drill(recipe, MODEL, fix_id(PATTERN, recipe), idempotent=False)
    assert r.amplification_pm == 1000 and r.max_attempts_seen == 1
    assert r.success_bp <= r.baseline_success_bp + 300


def test_retrying_a_rate_limiter_blindly_amplifies_more_than_respecting_it() -> None:
    model = FaultModel(failure_bp={"rate_limited": 3000}, retry_after_ms=3000)
    blind_retry = {**RETRY, "max_attempts": 5, "base_ms": 100, "on": ["rate_limited"]}
    blind = {"scope": "api", "steps": [blind_retry], "budget_ms": 60_000}
    polite = {**blind, "steps": [blind_retry, {"type": "respect_retry_after", "max_wait_ms": 5000}]}
    rb = drill(blind, model, fix_id(PATTERN, blind))
    rp = drill(polite, model, fix_id(PATTERN, polite))
    assert rp.amplification_pm < rb.amplification_pm
    assert rp.success_bp >= rb.success_bp


def test_fallback_counts_only_when_told_to() -> None:
    model = FaultModel(failure_bp={"server_error": 5000})
    recipe = {"scope": "api", "steps": [{"type": "fallback", "target": "cache"}]}
    fid = fix_id(PATTERN, recipe)
    assert drill(recipe, model, fid).success_bp == drill(recipe, model, fid).baseline_success_bp
    assert drill(recipe, model, fid, fallback_ok=True).success_bp == 10_000


def test_drill_pattern_and_bad_input() -> None:
    pattern = {"error_class": "timeout", "latency_ms_avg": 9000, "latency_n": 5}
    r = drill_pattern(RECIPE, pattern, fix_id(PATTERN, RECIPE), runs=50, idempotent=False)
    assert r.runs == 50
    with pytest.raises(ValueError):
        drill(RECIPE, MODEL, b"x" * 32, runs=0)
