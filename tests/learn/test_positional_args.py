"""Arguments a recipe's steps set, passed by position (docs/sdk.md's own ``pay``).

``pay("jane", 4999, "order-17")`` worked until a keyed fix applied; then every such
call raised ``TypeError: pay() got multiple values for argument 'idempotency_key'``
and the provider was never called. The executor now reads the call as keywords.
"""

from __future__ import annotations

from typing import Any

from gossipmind.learn.executor import Executor
from gossipmind.learn.headers import as_keywords
from gossipmind.learn.plan import LocalRegistry
from gossipmind.learn.simulator import SimClock

KEYED = {
    "scope": "payments.charge",
    "budget_ms": 10_000,
    "steps": [
        {"type": "idempotency_key", "header": "Idempotency-Key"},
        {
            "type": "retry",
            "max_attempts": 3,
            "on": ["timeout"],
            "base_ms": 100,
            "cap_ms": 1000,
            "jitter": "none",
        },
    ],
}


def executor() -> Executor:
    return Executor(LocalRegistry(), clock=SimClock(), key_factory=lambda: "generated")


def test_a_key_passed_by_position_is_the_key_in_effect_and_never_passed_twice() -> None:
    calls: list[tuple[str, int, str | None]] = []

    def pay(customer: str, amount: int, idempotency_key: str | None = None) -> str:
        calls.append((customer, amount, idempotency_key))
        if len(calls) == 1:
            raise TimeoutError("charge timed out")
        return "ok"

    rec = executor().run_sync(KEYED, pay, "jane", 4999, "order-17", idempotent=False)
    assert rec.outcome == "success" and rec.value == "ok", rec.summary()
    assert calls == [("jane", 4999, "order-17")] * 2  # retried, under the caller's key
    assert rec.idempotency_key == "order-17" and "idempotency_key" in rec.applied


def test_headers_passed_by_position_get_the_key() -> None:
    seen: list[dict[str, str]] = []

    def post(url: str, headers: dict[str, str]) -> str:
        seen.append(dict(headers))
        return "ok"

    rec = executor().run_sync(
        KEYED, post, "https://x.test/pay", {"Accept": "json"}, idempotent=False
    )
    assert rec.outcome == "success", rec.summary()
    assert seen == [{"Accept": "json", "Idempotency-Key": "generated"}]


def test_the_fallback_gets_the_call_as_the_agent_made_it() -> None:
    got: list[tuple[Any, ...]] = []
    registry = LocalRegistry()

    def cached(*args: Any, **kwargs: Any) -> str:
        got.append((args, kwargs))
        return "fallback"

    registry.add_fallback("cached", cached)

    def pay(customer: str, amount: int, idempotency_key: str | None = None) -> str:
        raise TimeoutError("down")

    recipe = {**KEYED, "steps": [*KEYED["steps"], {"type": "fallback", "target": "cached"}]}
    ex = Executor(registry, clock=SimClock(), key_factory=lambda: "generated")
    rec = ex.run_sync(recipe, pay, "jane", 4999, idempotent=False)
    assert rec.value == "fallback" and got == [(("jane", 4999), {})], rec.summary()


def test_as_keywords_keeps_what_cannot_go_by_keyword() -> None:
    def only(a: int, /, b: int, *, c: int = 0) -> None: ...
    def star(a: int, *rest: int, idempotency_key: str | None = None) -> None: ...

    assert as_keywords(only, (1, 2), {"c": 3}) == ((1,), {"b": 2, "c": 3})
    assert as_keywords(star, (1, 2, 3), {}) == ((1, 2, 3), {})  # *rest has values
    assert as_keywords(star, (1,), {}) == ((), {"a": 1})
    assert as_keywords(only, (1, 2, 3, 4), {}) == ((1, 2, 3, 4), {})  # does not bind
