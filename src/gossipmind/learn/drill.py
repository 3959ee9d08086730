"""Drills: a candidate recipe against a fault model, reproducibly (DESIGN §6 step 4).

A drill is a stream of ``runs`` logical calls arriving every ``interval_ms``
of simulated time. Each call runs from its arrival, so calls overlap as
concurrent agents' calls would; shared state is judged by start time
(rate-limit windows are intervals, a breaker does not refuse a call that
began before it opened). The calls are made by the real
:class:`~gossipmind.learn.executor.Executor` driven by a
:class:`~gossipmind.learn.simulator.SimClock`: the very code that will apply
the fix in an agent, not a model of it. Sleeps and per-attempt timeouts
happen in simulated time, so a drill of 200 calls takes milliseconds.

The baseline is the same stream without the recipe: one attempt per call,
bounded only by how long the agents waited (the model's ``hang_ms``).

Seed = ``blake2b(fix_id)``: the service, the jitter and the idempotency keys
each draw from their own ``random.Random`` derived from it, and everything is
integer arithmetic, so every node drilling the same fix id against the same
model gets byte-identical results. The result fits the ``drill`` summary of
a ``fix.propose`` body (:meth:`DrillResult.to_body`).

What a drill cannot know: fallbacks and escalation handlers are local to each
agent. Fallback targets count as failures unless ``fallback_ok=True`` (then
the fallback answers at once, successfully); escalation handlers do nothing;
``set_param`` is skipped (no parameter is on the drill's allow-list).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from gossipmind.core.recipe import check_recipe, steps_by_type
from gossipmind.learn.breaker import AttemptTimeout
from gossipmind.learn.executor import Executor, LocalRegistry
from gossipmind.learn.simulator import (
    MAX_LATENCY_MS,
    FaultModel,
    SimClock,
    SimulatedFault,
    SimulatedService,
    sim_classifier,
)

DEFAULT_RUNS = 200
MAX_AMPLIFICATION_PM = 3000  # verifiers' cap: at most 3 calls per logical call on average
DEFAULT_INTERVAL_MS = 1000


def drill_seed(fix_id: bytes) -> int:
    """The drill seed of a fix: BLAKE2b-64 of its id, as an integer."""
    return int.from_bytes(hashlib.blake2b(fix_id, digest_size=8).digest(), "big")


def _sub_seed(seed: int, label: bytes) -> int:
    h = hashlib.blake2b(label, digest_size=8, key=seed.to_bytes(8, "big"))
    return int.from_bytes(h.digest(), "big")


@dataclass(frozen=True)
class DrillResult:
    runs: int
    success_bp: int
    baseline_success_bp: int
    amplification_pm: int  # service attempts per logical call, per mille (1000 = one each)
    added_latency_ms: int  # mean latency added over the baseline (0 if it saves time)
    latency_ms_avg: int
    baseline_latency_ms_avg: int
    max_attempts_seen: int

    def to_body(self) -> dict[str, int]:
        """The ``drill`` summary of a ``fix.propose`` body."""
        return {
            "runs": self.runs,
            "success_bp": self.success_bp,
            "baseline_success_bp": self.baseline_success_bp,
            "amplification_pm": self.amplification_pm,
            "added_latency_ms": self.added_latency_ms,
        }

    @property
    def better_than_baseline(self) -> bool:
        return self.success_bp > self.baseline_success_bp


def _stream(
    recipe: dict[str, Any] | None,
    model: FaultModel,
    seed: int,
    runs: int,
    interval_ms: int,
    idempotent: bool,
    fallback_ok: bool,
) -> tuple[int, int, int, int]:
    """Run the stream; return (successes, attempts, total latency ms, max attempts)."""
    clock = SimClock()
    service = SimulatedService(model, _sub_seed(seed, b"service"), clock)
    successes = total_latency = max_attempts = 0
    if recipe is None:
        for i in range(runs):
            clock.t = i * interval_ms  # arrival time: calls overlap like concurrent calls
            t0 = clock.t
            answered = True
            try:
                clock.call_with_timeout(service, model.hang_ms)
            except (SimulatedFault, AttemptTimeout):
                answered = False
            successes += answered
            total_latency += int(clock.t - t0)
        return successes, service.calls, total_latency, 1
    registry = LocalRegistry()
    steps = steps_by_type(recipe)
    if fallback_ok and "fallback" in steps:
        registry.add_fallback(steps["fallback"]["target"], lambda **_kw: "fallback")
    if "escalate" in steps:
        registry.add_escalation(steps["escalate"]["to"], lambda _summary: None)
    key_rng = random.Random(_sub_seed(seed, b"keys"))
    executor = Executor(
        registry,
        classifier=sim_classifier,
        clock=clock,
        rng=random.Random(_sub_seed(seed, b"jitter")),
        key_factory=lambda: f"{key_rng.getrandbits(128):032x}",
        wall_clock=lambda: 0.0,
    )
    for i in range(runs):
        clock.t = i * interval_ms  # arrival time: calls overlap like concurrent calls
        before = service.calls
        record = executor.run_sync(
            recipe, service, idempotent=idempotent, breaker_key=("drill", "call")
        )
        successes += record.ok
        total_latency += record.elapsed_ms
        max_attempts = max(max_attempts, service.calls - before)
    return successes, service.calls, total_latency, max_attempts


def drill(
    recipe: dict[str, Any],
    model: FaultModel,
    fix_id: bytes,
    *,
    runs: int = DEFAULT_RUNS,
    interval_ms: int = DEFAULT_INTERVAL_MS,
    idempotent: bool = True,
    fallback_ok: bool = False,
) -> DrillResult:
    """Drill ``recipe`` against ``model``, seeded by ``fix_id``; deterministic."""
    check_recipe(recipe)
    if runs < 1:
        raise ValueError("a drill needs at least one run")
    seed = drill_seed(fix_id)
    ok, attempts, latency, most = _stream(
        recipe, model, seed, runs, interval_ms, idempotent, fallback_ok
    )
    b_ok, _, b_latency, _ = _stream(None, model, seed, runs, interval_ms, idempotent, fallback_ok)
    return DrillResult(
        runs=runs,
        success_bp=ok * 10_000 // runs,
        baseline_success_bp=b_ok * 10_000 // runs,
        amplification_pm=attempts * 1000 // runs,
        added_latency_ms=max(0, (latency - b_latency) // runs),
        latency_ms_avg=latency // runs,
        baseline_latency_ms_avg=b_latency // runs,
        max_attempts_seen=most,
    )


def outage_model(
    model: FaultModel,
    error_class: str,
    *,
    runs: int = DEFAULT_RUNS,
    interval_ms: int = DEFAULT_INTERVAL_MS,
) -> FaultModel:
    """``model`` with the service down for half of a drill: an outage.

    One burst period spans the drill's whole stream of arrivals (``runs`` times
    ``interval_ms``, at most the longest period a model holds), and every
    attempt that starts in its first half fails with ``error_class``. Where the
    half falls depends on the seed, but exactly half of the calls arrive in it
    (when the stream fits one period), so an outage drill always sees one.
    This is where a retry storm shows: a recipe that multiplies calls by its
    attempts when the service is down (``check_fix`` caps the amplification).
    """
    period = max(2, min(runs * interval_ms, MAX_LATENCY_MS))
    return replace(model, burst_period_ms=period, burst_len_ms=period // 2, burst_class=error_class)


def drill_pattern(
    recipe: dict[str, Any],
    pattern: Mapping[str, Any],
    fix_id: bytes,
    *,
    failure_bp: int = 3000,
    runs: int = DEFAULT_RUNS,
    idempotent: bool = True,
) -> DrillResult:
    """Drill against the fault model built from a pattern row (``FaultModel.from_pattern``)."""
    model = FaultModel.from_pattern(pattern, failure_bp=failure_bp)
    return drill(recipe, model, fix_id, runs=runs, idempotent=idempotent)
