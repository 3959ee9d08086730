"""Property: for any valid recipe and any failure sequence the executor's bounds hold."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmind.core.recipe import ERROR_CLASSES, check_recipe, steps_by_type
from gossipmind.learn.executor import Execution, Executor, LocalRegistry
from gossipmind.learn.simulator import AsyncSimClock, SimClock


class Fault(Exception):
    def __init__(self, error_class: str, retry_after_ms: int | None) -> None:
        super().__init__(error_class)
        self.error_class = error_class
        if retry_after_ms is not None:
            self.retry_after_ms = retry_after_ms


classes = st.sampled_from(ERROR_CLASSES)
retry_step = st.builds(
    lambda n, base, extra, jitter, on: {
        "type": "retry",
        "max_attempts": n,
        "base_ms": base,
        "cap_ms": base + extra,
        "jitter": jitter,
        "on": sorted(on),
    },
    st.integers(2, 10),
    st.integers(1, 200) | st.integers(1, 5000),
    st.integers(0, 2000) | st.integers(0, 20_000),
    st.sampled_from(["none", "full", "equal"]),
    st.sets(classes, min_size=1) | st.just({"server_error", "timeout"}),
)
optional_steps = st.fixed_dictionaries(
    {},
    optional={
        "respect_retry_after": st.builds(
            lambda ms: {"type": "respect_retry_after", "max_wait_ms": ms}, st.integers(1, 30_000)
        ),
        "timeout": st.builds(lambda ms: {"type": "timeout", "ms": ms}, st.integers(1, 20_000)),
        "idempotency_key": st.just({"type": "idempotency_key", "header": "Idempotency-Key"}),
        "circuit_breaker": st.builds(
            lambda n, ms: {"type": "circuit_breaker", "failure_threshold": n, "reset_ms": ms},
            st.integers(1, 5),
            st.integers(1, 10_000),
        ),
        "fallback": st.builds(
            lambda t: {"type": "fallback", "target": t}, st.sampled_from(["local", "remote"])
        ),
        "set_param": st.builds(
            lambda n, v: {"type": "set_param", "name": n, "value": v},
            st.sampled_from(["allowed", "forbidden"]),
            st.integers(0, 9),
        ),
        "escalate": st.just({"type": "escalate", "to": "nobody"}),
    },
)
recipes = st.builds(
    lambda r, opt, budget, order: {
        "scope": "svc.op",
        "steps": random.Random(order).sample(
            [x for x in [r, *opt.values()] if x is not None], 1 + len(opt) - (r is None)
        ),
        **({"budget_ms": budget} if r is not None or budget % 2 else {}),
    },
    st.integers(0, 9).flatmap(lambda i: st.none() if i == 0 else retry_step),
    optional_steps,
    st.integers(1, 2000) | st.integers(1, 600_000),
    st.integers(0, 1000),
).filter(lambda r: len(r["steps"]) > 0)
outcomes = st.lists(
    st.tuples(
        st.integers(0, 300) | st.integers(0, 30_000),
        st.sampled_from([None, "server_error", "timeout"]) | classes,
        st.none() | st.integers(0, 40_000),
    ),
    min_size=1,
    max_size=12,
)


class Service:
    def __init__(self, clock: SimClock, script: list[tuple[int, str | None, int | None]]) -> None:
        self.clock, self.script, self.calls = clock, script, []

    def step(self, kwargs: dict[str, Any]) -> str:
        self.calls.append(kwargs)
        latency, cls, hint = self.script[min(len(self.calls), len(self.script)) - 1]
        self.clock.advance(latency)
        if cls is not None:
            raise Fault(cls, hint)
        return "ok"

    def __call__(
        self, *, idempotency_key: str | None = None, allowed: int = -1, forbidden: int = -1
    ) -> str:
        return self.step(
            {"idempotency_key": idempotency_key, "allowed": allowed, "forbidden": forbidden}
        )


def executor(clock: SimClock, seed: int) -> Executor:
    reg = LocalRegistry()
    reg.allow_param("allowed")
    reg.add_fallback("local", lambda **_kw: "fallback")
    keys = iter(range(10**6))
    return Executor(
        reg,
        classifier=lambda e: e.error_class if isinstance(e, Fault) else "unknown",
        clock=clock,
        async_clock=AsyncSimClock(clock),
        rng=random.Random(seed),
        key_factory=lambda: f"key{next(keys)}",
    )


def check_bounds(
    recipe: dict[str, Any], rec: Execution[Any], svc: Service, idempotent: bool
) -> None:
    steps = steps_by_type(recipe)
    max_attempts = steps["retry"]["max_attempts"] if "retry" in steps else 1
    assert len(svc.calls) == rec.attempts <= max_attempts
    if "budget_ms" in recipe:
        assert rec.elapsed_ms <= recipe["budget_ms"]
    key_applied = "idempotency_key" in rec.applied
    if not idempotent and not key_applied:
        assert rec.attempts <= 1
    if key_applied:
        assert len({c["idempotency_key"] for c in svc.calls}) == 1
        assert svc.calls[0]["idempotency_key"] == rec.idempotency_key
    assert all(c["forbidden"] == -1 for c in svc.calls)
    skipped = {s.step for s in rec.skipped}
    if steps.get("fallback", {}).get("target") == "remote":
        assert "fallback" in skipped and rec.fallback is None
    if steps.get("set_param", {}).get("name") == "forbidden":
        assert "set_param" in skipped
    if rec.outcome == "fallback":
        assert rec.value == "fallback" and steps["fallback"]["target"] == "local"
    if "timeout" in steps:
        limit = steps["timeout"]["ms"]
        assert all(svc.calls)  # every attempt ran
        assert rec.elapsed_ms <= rec.waited_ms + rec.attempts * limit
    assert rec.waited_ms <= rec.elapsed_ms
    assert rec.outcome in ("success", "fallback", "failed")


@settings(max_examples=300, deadline=None)
@given(recipes, outcomes, st.booleans(), st.integers(0, 2**32))
def test_sync_bounds_hold(
    recipe: dict[str, Any], script: list[Any], idempotent: bool, seed: int
) -> None:
    check_recipe(recipe)
    clock = SimClock()
    svc = Service(clock, script)
    rec = executor(clock, seed).run_sync(recipe, svc, idempotent=idempotent)
    check_bounds(recipe, rec, svc, idempotent)


@settings(max_examples=100, deadline=None)
@given(recipes, outcomes, st.booleans(), st.integers(0, 2**32))
def test_async_bounds_hold_and_match_sync(
    recipe: dict[str, Any], script: list[Any], idempotent: bool, seed: int
) -> None:
    clock = SimClock()
    svc = Service(clock, script)

    async def acall(
        *, idempotency_key: str | None = None, allowed: int = -1, forbidden: int = -1
    ) -> str:
        return svc(idempotency_key=idempotency_key, allowed=allowed, forbidden=forbidden)

    rec = asyncio.run(executor(clock, seed).run_async(recipe, acall, idempotent=idempotent))
    check_bounds(recipe, rec, svc, idempotent)
    # the same recipe and script run sync give the same record: one semantics, two drivers
    clock2 = SimClock()
    svc2 = Service(clock2, script)
    rec2 = executor(clock2, seed).run_sync(recipe, svc2, idempotent=idempotent)
    assert rec.summary() == rec2.summary() and svc.calls == svc2.calls
