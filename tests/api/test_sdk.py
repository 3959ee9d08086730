"""The SDK against real node APIs: the whole flow, sync / asyncio / trio, failing open."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
import trio

from conftest import Running, fleet
from gossipmind.api.client import Client, Fix

RECIPE = {
    "scope": "search",
    "steps": [
        {
            "type": "retry",
            "max_attempts": 3,
            "base_ms": 1,
            "cap_ms": 5,
            "jitter": "none",
            "on": ["timeout"],
        }
    ],
    "budget_ms": 5000,
}


class Flaky:
    """Fails with a timeout on the first ``fail`` calls of each logical call."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.calls = itertools.count()

    def __call__(self, x: int) -> int:
        if next(self.calls) < self.fail:
            raise TimeoutError(f"search timed out after 3000 ms (request {x})")
        return x * 2


async def learn_timeout_fix(agents: list[Running]) -> bytes:
    """Two agents fail the same way; wait until the fleet accepted a fix for it."""
    pattern = b""
    for r in agents:
        client = Client(r.spec.dir, stream=False)
        flaky = Flaky(fail=10)

        def fail_once(c: Client = client, f: Flaky = flaky) -> bytes:
            with pytest.raises(TimeoutError):
                c.resilient(service="search", operation="query")(f)(1)
            return c.pattern_of(
                TimeoutError("search timed out after 3000 ms (request 1)"),
                service="search",
                operation="query",
            ).pattern

        pattern = await trio.to_thread.run_sync(fail_once)
        client.close()
    with trio.fail_after(30):
        while agents[0].node.fixes.best(pattern) is None:
            await trio.sleep(0.05)
    return pattern


async def test_sync_decorator_recovers_then_reports_the_outcome(tmp_path: Path) -> None:
    async with fleet(tmp_path, 4, 1) as (admin, verifier, a, b):
        client = Client(b.spec.dir)
        assert await trio.to_thread.run_sync(client.wait_ready, 10)
        pattern = await learn_timeout_fix([verifier, a])
        with trio.fail_after(10):
            while client.fix_for(pattern) is None:  # the event stream delivers it
                await trio.sleep(0.05)
        flaky = Flaky(fail=1)
        decorated = client.resilient(service="search", operation="query")(flaky)
        assert await trio.to_thread.run_sync(decorated, 21) == 42
        assert client.stats.recoveries == 1 and client.stats.fixes_applied == 1
        fix = client.fix_for(pattern)
        assert fix is not None
        with trio.fail_after(10):
            while (admin.node.fixes.row(fix.id) or {}).get("successes") != 1:
                await trio.sleep(0.05)
        client.close()


async def test_async_and_trio_functions(tmp_path: Path) -> None:
    async with fleet(tmp_path, 3, 1) as (_admin, verifier, a):
        pattern = await learn_timeout_fix([verifier, a])
        client = Client(a.spec.dir)
        assert await trio.to_thread.run_sync(client.wait_ready, 10)
        with trio.fail_after(10):  # the fix reaches a's node by gossip, then its stream
            while client.fix_for(pattern) is None:
                await trio.sleep(0.05)

        def run_asyncio() -> int:
            flaky = Flaky(fail=1)

            @client.resilient(service="search", operation="query")
            async def call(x: int) -> int:
                await asyncio.sleep(0)
                return flaky(x)

            return asyncio.run(call(5))

        def run_trio() -> int:
            flaky = Flaky(fail=2)

            @client.resilient(service="search", operation="query")
            async def call(x: int) -> int:
                await trio.sleep(0)
                return flaky(x)

            return trio.run(call, 7)

        assert await trio.to_thread.run_sync(run_asyncio) == 10
        assert await trio.to_thread.run_sync(run_trio) == 14
        assert client.stats.recoveries == 2
        client.close()


def test_fails_open_when_the_node_is_down() -> None:
    client = Client(url="http://127.0.0.1:9", token="x" * 20, stream=False, queue_max=3)
    assert client.flush() == 0
    ok = client.resilient(service="search", operation="query")(lambda x: x + 1)
    assert ok(1) == 2
    flaky = Flaky(fail=100)
    wrapped = client.resilient(service="search", operation="query")(flaky)
    for i in range(5):
        with pytest.raises(TimeoutError):
            wrapped(i)
    assert len(client.outbox.items) == 3 and client.outbox.dropped == 2
    degrade = client.resilient(
        service="search",
        operation="query",
        on_failure="degrade",
        default=lambda exc: f"cached ({type(exc).__name__})",
    )
    assert degrade(flaky)(1) == "cached (TimeoutError)"
    with client.resilient(service="search", operation="query", on_failure="degrade") as r:
        raise ConnectionResetError("peer reset")
    assert isinstance(r.error, ConnectionResetError)
    with pytest.raises(ValueError), client.resilient(service="search", operation="query"):
        raise ValueError("bad input")


def test_non_idempotent_calls_are_never_retried_without_a_key() -> None:
    client = Client(url="http://127.0.0.1:9", token="x" * 20, stream=False)
    fix = Fix(b"\x01" * 32, b"\x02" * 32, RECIPE, "", "low")
    flaky = Flaky(fail=1)
    first = TimeoutError("first")
    execution = client.apply_fix(fix, flaky, 3, idempotent=False, prior_error=first)
    assert not execution.ok and execution.attempts == 1  # the failed call was the only one
    execution = client.apply_fix(fix, Flaky(fail=1), 3, idempotent=True, prior_error=first)
    assert execution.ok and execution.value == 6
