"""The executor on coroutine functions: trio (virtual time via autojump_clock) and asyncio."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import trio

from gossipmind.learn.breaker import AttemptTimeout
from gossipmind.learn.executor import Executor, LocalRegistry
from gossipmind.learn.simulator import AsyncSimClock, SimClock


class Status(Exception):
    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        if retry_after is not None:
            self.retry_after = retry_after


def recipe(*steps: dict[str, Any], budget: int = 60_000) -> dict[str, Any]:
    return {"scope": "api.call", "steps": list(steps), "budget_ms": budget}


def retry(n: int = 3, on: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "retry",
        "max_attempts": n,
        "base_ms": 100,
        "cap_ms": 1000,
        "jitter": "none",
        "on": on or ["server_error", "timeout"],
    }


KEY = {"type": "idempotency_key", "header": "Idempotency-Key"}


class TrioService:
    """Sleeps ``latency`` s in trio time, then fails with the scripted error or answers."""

    def __init__(self, script: list[tuple[float, BaseException | None]]) -> None:
        self.script = list(script)
        self.started: list[float] = []
        self.keys: list[str | None] = []

    async def __call__(self, *, idempotency_key: str | None = None) -> str:
        self.started.append(trio.current_time())
        self.keys.append(idempotency_key)
        latency, exc = self.script.pop(0) if self.script else (0.01, None)
        await trio.sleep(latency)
        if exc is not None:
            raise exc
        return "ok"


def executor(registry: LocalRegistry | None = None) -> Executor:
    return Executor(registry, rng=random.Random(0), key_factory=lambda: "k1")


async def test_trio_retry_backoff_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    svc = TrioService([(0.01, Status(503)), (0.01, Status(503)), (0.01, None)])
    t0 = trio.current_time()
    rec = await executor().run_async(recipe(retry(4)), svc, idempotent=True)
    assert rec.outcome == "success" and rec.attempts == 3 and rec.waited_ms == 300
    assert [round((t - t0) * 1000) for t in svc.started] == [0, 110, 320]


async def test_trio_timeout_step_cancels_the_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    svc = TrioService([(30.0, None), (30.0, None), (0.05, None)])
    steps = (retry(3, on=["timeout"]), {"type": "timeout", "ms": 1000})
    t0 = trio.current_time()
    rec = await executor().run_async(recipe(*steps), svc, idempotent=True)
    assert rec.outcome == "success" and rec.errors == ["timeout", "timeout"]
    assert [round((t - t0) * 1000) for t in svc.started] == [0, 1100, 2300]


async def test_trio_budget_bounds_total_time(autojump_clock: trio.testing.MockClock) -> None:
    svc = TrioService([(0.3, Status(503))] * 10)
    t0 = trio.current_time()
    rec = await executor().run_async(recipe(retry(10), budget=1000), svc, idempotent=True)
    assert rec.stop == "budget" and (trio.current_time() - t0) * 1000 <= 1000 + 1e-6
    assert rec.attempts <= 10
    svc = TrioService([(60.0, None)])
    t0 = trio.current_time()
    rec = await executor().run_async(recipe(retry(3), budget=2000), svc, idempotent=True)
    assert isinstance(rec.error, AttemptTimeout)
    assert abs((trio.current_time() - t0) - 2.0) < 1e-6


async def test_trio_non_idempotent_and_idempotency_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    svc = TrioService([(0.01, Status(503)), (0.01, None)])
    rec = await executor().run_async(recipe(retry(3)), svc, idempotent=False)
    assert rec.attempts == 1 and rec.stop == "non_idempotent"
    svc = TrioService([(0.01, Status(503)), (0.01, Status(503)), (0.01, None)])
    assert await executor().execute_trio(recipe(retry(3), KEY), svc, idempotent=False) == "ok"
    assert svc.keys == ["k1", "k1", "k1"]


async def test_trio_respect_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    svc = TrioService([(0.0, Status(429, retry_after=2.5)), (0.0, None)])
    steps = (retry(3, on=["rate_limited"]), {"type": "respect_retry_after", "max_wait_ms": 5000})
    t0 = trio.current_time()
    rec = await executor().run_async(recipe(*steps), svc, idempotent=True)
    assert rec.outcome == "success" and abs(svc.started[1] - t0 - 2.5) < 1e-6


async def test_trio_async_fallback_and_escalation(autojump_clock: trio.testing.MockClock) -> None:
    got: list[dict[str, Any]] = []

    async def cached() -> str:
        await trio.sleep(0.01)
        return "cached"

    async def page(summary: dict[str, Any]) -> None:
        await trio.sleep(0)
        got.append(summary)

    reg = LocalRegistry()
    reg.add_fallback("cache", cached)
    reg.add_escalation("oncall", page)
    svc = TrioService([(0.01, Status(503))] * 10)
    r = recipe(retry(2), {"type": "fallback", "target": "cache"})
    assert await executor(reg).aexecute(r, svc, idempotent=True) == "cached"
    with pytest.raises(Status):
        await executor(reg).execute_async(
            recipe(retry(2), {"type": "escalate", "to": "oncall"}), svc, idempotent=True
        )
    assert got[0]["errors"] == ["server_error", "server_error"]


async def test_trio_cancellation_is_not_swallowed(autojump_clock: trio.testing.MockClock) -> None:
    svc = TrioService([(100.0, None)])
    with trio.move_on_after(1) as cs:
        await executor().run_async(recipe(retry(5)), svc, idempotent=True)
    assert cs.cancelled_caught and len(svc.started) == 1


def test_asyncio_retry_timeout_and_key() -> None:
    class AioService:
        def __init__(self) -> None:
            self.keys: list[str | None] = []

        async def __call__(self, *, idempotency_key: str | None = None) -> str:
            self.keys.append(idempotency_key)
            if len(self.keys) == 1:
                await asyncio.sleep(30)  # hangs: cut by the 20 ms timeout step
            if len(self.keys) == 2:
                raise Status(502)
            return "ok"

    async def main() -> None:
        svc = AioService()
        steps = (retry(3), {"type": "timeout", "ms": 20}, KEY)
        ex = Executor(rng=random.Random(0), key_factory=lambda: "k9")
        r = recipe(*steps)
        r["steps"][0] = {**r["steps"][0], "base_ms": 1, "cap_ms": 1}
        rec = await ex.run_async(r, svc, idempotent=False)
        assert rec.outcome == "success", rec
        assert rec.errors == ["timeout", "server_error"] and svc.keys == ["k9"] * 3

    asyncio.run(main())


def test_asyncio_with_a_simulated_clock() -> None:
    sim = SimClock()
    started: list[float] = []

    async def svc() -> str:
        started.append(sim.now_ms())
        sim.advance(50)
        if len(started) < 3:
            raise Status(503)
        return "ok"

    async def main() -> None:
        ex = Executor(clock=sim, async_clock=AsyncSimClock(sim), rng=random.Random(0))
        rec = await ex.run_async(recipe(retry(3)), svc, idempotent=True)
        assert rec.outcome == "success" and started == [0, 150, 400]
        slow = await ex.run_async(recipe({"type": "timeout", "ms": 10}), svc, idempotent=True)
        assert isinstance(slow.error, AttemptTimeout) and sim.now_ms() == 460

    asyncio.run(main())
