"""Accepted recipes that made the agent applying them worse off (review "recipes").

Each test failed on the code before its fix.

- two calls whose fixes fall back to each other looped until the recursion limit,
  calling the service hundreds of times for one call of the agent's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gossipmind.learn.executor import Executor, LocalRegistry


def falls_back_to(target: str, scope: str) -> dict[str, Any]:
    retry = {"type": "retry", "max_attempts": 2, "base_ms": 1, "cap_ms": 1, "jitter": "none"}
    return {
        "scope": scope,
        "budget_ms": 5000,
        "steps": [retry | {"on": ["connection"]}, {"type": "fallback", "target": target}],
    }


def test_fallbacks_that_call_each_other_do_not_loop() -> None:
    """``primary``'s fix falls back to ``secondary``, whose fix falls back to ``primary``
    (each registered as the other's fallback: "try the other provider"). One call of the
    agent's made ~280 calls of the providers (97 with a recursion limit of 400) before
    a RecursionError ended it; now a call made by a fallback gets no fallback of its
    own: 2 attempts of each."""
    registry = LocalRegistry()
    ex = Executor(registry)
    calls: list[str] = []

    def provider(name: str) -> Any:
        calls.append(name)
        raise ConnectionError(f"{name} down")

    def primary(q: str) -> Any:
        return ex.execute_sync(
            falls_back_to("secondary", "search.primary"), provider, "primary", idempotent=True
        )

    def secondary(q: str) -> Any:
        return ex.execute_sync(
            falls_back_to("primary", "search.secondary"), provider, "secondary", idempotent=True
        )

    registry.add_fallback("secondary", secondary)
    registry.add_fallback("primary", primary)
    record = ex.run_sync(
        falls_back_to("secondary", "search.primary"), provider, "primary", idempotent=True
    )
    assert record.outcome == "failed" and isinstance(record.error, ConnectionError)
    assert calls == ["primary", "primary", "secondary", "secondary"]
    assert record.notes == ["fallback 'secondary' failed: ConnectionError"]


def test_async_fallbacks_that_call_each_other_do_not_loop() -> None:
    registry = LocalRegistry()
    ex = Executor(registry)
    calls: list[str] = []

    async def provider(name: str) -> Any:
        calls.append(name)
        raise ConnectionError(f"{name} down")

    async def primary(q: str) -> Any:
        return await ex.execute_async(
            falls_back_to("secondary", "search.primary"), provider, "primary", idempotent=True
        )

    async def secondary(q: str) -> Any:
        return await ex.execute_async(
            falls_back_to("primary", "search.secondary"), provider, "secondary", idempotent=True
        )

    registry.add_fallback("secondary", secondary)
    registry.add_fallback("primary", primary)
    record = asyncio.run(
        ex.run_async(
            falls_back_to("secondary", "search.primary"), provider, "primary", idempotent=True
        )
    )
    assert record.outcome == "failed" and isinstance(record.error, ConnectionError)
    assert calls == ["primary", "primary", "secondary", "secondary"]


def test_a_fallback_still_answers_when_it_does_not_loop() -> None:
    registry = LocalRegistry()
    registry.add_fallback("cache", lambda q: ["cached"])
    ex = Executor(registry)

    def search(q: str) -> Any:
        raise ConnectionError("down")

    record = ex.run_sync(falls_back_to("cache", "search.query"), search, "q", idempotent=True)
    assert record.outcome == "fallback" and record.value == ["cached"]
    again = ex.run_sync(falls_back_to("cache", "search.query"), search, "q", idempotent=True)
    assert again.value == ["cached"]  # the flag does not outlive the fallback
