"""Accepted recipes that made the agent applying them worse off (review "recipes").

Each test failed on the code before its fix.

- two calls whose fixes fall back to each other looped until the recursion limit,
  calling the service hundreds of times for one call of the agent's;
- a sync attempt under a ``timeout`` step that could get no thread (the process at its
  thread limit, say with attempts abandoned at their timeout) was never made, and the
  call ended with ``RuntimeError`` instead of its own value or error;
- the registry is one for all of a client's calls: a fix for ``payments.charge``
  naming the search cache's fallback returned the cache's value as the charge's.
  A registration can now be limited to a scope;
- a retry the circuit breaker refused (another call held the half-open trial) ended the
  call with ``CircuitOpen`` instead of its own error;
- a ``Retry-After`` date in ``-0000`` was read as the host's local time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from email.utils import formatdate
from typing import Any

import pytest

from gossipmind.learn.breaker import CircuitOpen, SystemClock, retry_after_ms
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


def test_an_attempt_that_gets_no_thread_is_still_made(monkeypatch: pytest.MonkeyPatch) -> None:
    real = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name == "gossipmind-attempt":
            raise RuntimeError("can't start new thread")
        real(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    bounded = {
        "scope": "search.query",
        "budget_ms": 5000,
        "steps": [
            {
                "type": "retry",
                "max_attempts": 3,
                "base_ms": 1,
                "cap_ms": 1,
                "jitter": "none",
                "on": ["timeout"],
            },
            {"type": "timeout", "ms": 1000},
        ],
    }
    made: list[str] = []

    def search(q: str) -> str:
        made.append(q)
        return "results"

    first = TimeoutError("the agent's own")
    record = Executor().run_sync(bounded, search, "q", idempotent=True, prior_error=first)
    assert record.outcome == "success" and record.value == "results" and made == ["q"]

    def down(q: str) -> str:
        made.append(q)
        raise ConnectionError("the agent's own error")

    record = Executor().run_sync(bounded, down, "q", idempotent=True)
    assert isinstance(record.error, ConnectionError) and len(made) == 2


def test_a_registration_limited_to_a_scope_serves_no_other_scope() -> None:
    registry = LocalRegistry()
    registry.add_fallback("search-cache", lambda *a, **kw: ["cached"], scope="search")
    registry.add_escalation("oncall", lambda summary: None, scope="search.query")
    registry.allow_param("page_size", scope="search")
    ex = Executor(registry)

    def charge(customer: str, amount: int, page_size: int = 0) -> str:
        raise TimeoutError("charge timed out")

    steps = [
        {"type": "set_param", "name": "page_size", "value": 100},
        {"type": "fallback", "target": "search-cache"},
        {"type": "escalate", "to": "oncall"},
    ]
    record = ex.run_sync(
        {"scope": "payments.charge", "steps": steps}, charge, "jane", 4999, idempotent=False
    )
    assert record.outcome == "failed" and isinstance(record.error, TimeoutError)
    assert record.value is None and record.applied == []
    assert [s.step for s in record.skipped] == ["set_param", "fallback", "escalate"]
    assert "registered for scope 'search' only" in record.skipped[1].reason

    def query(q: str, page_size: int = 0) -> str:
        raise TimeoutError("search timed out")

    record = ex.run_sync({"scope": "search.query", "steps": steps}, query, "q", idempotent=True)
    assert record.outcome == "fallback" and record.value == ["cached"]
    assert record.applied == ["set_param", "fallback", "escalate"]
    registry.add_fallback("search-cache", lambda *a, **kw: ["any"])  # again, unscoped
    record = ex.run_sync(
        {"scope": "payments.charge", "steps": steps[1:2]}, charge, "j", 1, idempotent=False
    )
    assert record.value == ["any"]  # as before: an unscoped registration serves every scope


class TrialTaker(SystemClock):
    """The real clock, during whose sleeps another call takes the half-open trial."""

    def __init__(self) -> None:
        self.ex: Executor | None = None

    def sleep_ms(self, ms: int) -> None:
        super().sleep_ms(ms)
        assert self.ex is not None
        assert self.ex.breakers.allow("key", 1)  # another call's attempt, still running


def test_a_retry_the_breaker_refuses_ends_with_the_calls_own_error() -> None:
    """The breaker opened on the call's own failure; when the retry came, another call
    held the half-open trial. The call ended with the SDK's ``CircuitOpen`` instead of
    its own error (which an agent's ``except TimeoutError`` no longer caught)."""
    clock = TrialTaker()
    ex = clock.ex = Executor(clock=clock)
    breaker = {"type": "circuit_breaker", "failure_threshold": 1, "reset_ms": 1}
    retry = {"type": "retry", "max_attempts": 3, "base_ms": 5, "cap_ms": 5, "jitter": "none"}
    recipe = {
        "scope": "search.query",
        "budget_ms": 5000,
        "steps": [retry | {"on": ["timeout"]}, breaker],
    }

    def search() -> str:
        raise TimeoutError("search timed out")

    record = ex.run_sync(recipe, search, idempotent=True, breaker_key="key")
    assert isinstance(record.error, TimeoutError) and not isinstance(record.error, CircuitOpen)
    assert record.attempts == 1 and record.stop == "circuit_open"


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Berlin", "UTC"])
def test_a_retry_after_date_in_minus_0000_is_utc_on_any_host(
    monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    """``-0000`` dates parse without a zone, and were read as the host's local time: on
    a New York host a 60 s hint became 5 h (the retry given up as too long), on a Berlin
    host 0 (the rate limiter hammered at once)."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        now = 1_800_000_000.0
        date = formatdate(now + 60, usegmt=True).replace("GMT", "-0000")

        limited = Exception("429 Too Many Requests")
        limited.headers = {"Retry-After": date}  # type: ignore[attr-defined]
        assert retry_after_ms(limited, lambda: now) == 60_000
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_task_a_fallback_starts_gets_fallbacks_once_the_fallback_returned() -> None:
    """A fallback that serves the cache and starts a background refresh: the task
    inherits the context, and the flag that says "a fallback runs" was a value copied
    with it, true for good. Every call the task made afterwards, long after the
    fallback returned, got no fallback of its own (s9 review)."""
    registry = LocalRegistry()
    ex = Executor(registry)
    recipe = falls_back_to("cache", "search.query")

    async def search(q: str) -> Any:
        raise ConnectionError("down")

    async def main() -> tuple[Any, Any]:
        returned = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []

        async def refresh(q: str) -> Any:
            await asyncio.wait_for(returned.wait(), 5)  # runs after the fallback returned
            return await ex.run_async(recipe, search, q, idempotent=True)

        async def cache(q: str) -> Any:
            if not tasks:
                tasks.append(asyncio.get_running_loop().create_task(refresh(q)))
            return ["cached"]

        registry.add_fallback("cache", cache)
        first = await ex.run_async(recipe, search, "q", idempotent=True)
        returned.set()
        return first, await asyncio.wait_for(tasks[0], 5)

    first, later = asyncio.run(main())
    assert first.outcome == "fallback"
    assert later.outcome == "fallback" and later.value == ["cached"]


class Conflict(Exception):
    status_code = 409  # a request with this idempotency key is in flight (Stripe)


class Provider:
    """Deduplicates by key: a key in flight is refused with 409; a key done answers
    what its first request did. The first request finishes once a conflict was met
    (so the test never depends on how long anything takes)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: dict[str, str] = {}
        self.conflicted = threading.Event()
        self.charges = 0

    def charge(self, amount: int, idempotency_key: str | None = None) -> str:
        assert idempotency_key is not None
        with self.lock:
            state = self.state.get(idempotency_key)
            if state == "pending":
                self.conflicted.set()
                raise Conflict("409 idempotency key in use")
            if state is not None:
                return state
            self.state[idempotency_key] = "pending"
        self.conflicted.wait(10)  # a charge slower than the recipe's timeout
        with self.lock:
            self.charges += 1
            self.state[idempotency_key] = f"charged {amount}"
            return self.state[idempotency_key]


def test_a_conflict_after_a_cut_attempt_waits_for_what_that_attempt_did() -> None:
    """A keyed charge cut at its timeout runs on at the provider; the same-key retry
    met 409 (in flight) and the call ended with it: the agent was told the charge
    failed while it went through (s9 recipes review, finding 2). The call now retries
    the conflict with the same key, and gets the first charge's answer."""
    provider = Provider()
    retry = {"type": "retry", "max_attempts": 10, "base_ms": 20, "cap_ms": 100, "jitter": "none"}
    recipe = {
        "scope": "payments.charge",
        "budget_ms": 20_000,
        "steps": [
            {"type": "idempotency_key", "header": "Idempotency-Key"},
            retry | {"on": ["timeout"]},
            {"type": "timeout", "ms": 100},
        ],
    }
    rec = Executor(clock=SystemClock()).run_sync(recipe, provider.charge, 4999, idempotent=False)
    assert rec.outcome == "success" and rec.value == "charged 4999", rec
    assert rec.errors[0] == "timeout" and "conflict" in rec.errors and provider.charges == 1


def test_a_conflict_without_a_cut_attempt_is_not_retried() -> None:
    """Only a conflict that may be the call's own cut attempt is waited for."""
    calls: list[str | None] = []

    def charge(idempotency_key: str | None = None) -> str:
        calls.append(idempotency_key)
        raise Conflict("409 idempotency key in use")

    retry = {"type": "retry", "max_attempts": 3, "base_ms": 1, "cap_ms": 1, "jitter": "none"}
    recipe = {
        "scope": "payments.charge",
        "budget_ms": 5000,
        "steps": [
            {"type": "idempotency_key", "header": "Idempotency-Key"},
            retry | {"on": ["timeout"]},
        ],
    }
    rec = Executor(clock=SystemClock()).run_sync(recipe, charge, idempotent=False)
    assert rec.outcome == "failed" and len(calls) == 1 and rec.stop == "not_retryable:conflict"


def keyed_charge_recipe(max_attempts: int) -> dict[str, Any]:
    retry = {"type": "retry", "max_attempts": max_attempts, "base_ms": 20, "cap_ms": 20}
    return {
        "scope": "payments.charge",
        "budget_ms": 20_000,
        "steps": [
            {"type": "idempotency_key", "header": "Idempotency-Key"},
            retry | {"jitter": "none", "on": ["timeout"]},
            {"type": "timeout", "ms": 100},
        ],
    }


def test_a_keyed_charge_that_ends_while_its_cut_attempt_runs_is_in_doubt() -> None:
    """Attempts ran out on the conflict while the cut attempt went on: the call
    failed with the provider's 409, and the charge went through. Nothing told
    the agent that this "failed" may be "done" (s9 recipes review, left open).
    The execution is now ``in_doubt`` and the error carries a note naming the key."""
    provider = Provider()
    ex = Executor(clock=SystemClock(), key_factory=lambda: "key-7")
    with pytest.raises(Conflict) as info:
        ex.execute_sync(keyed_charge_recipe(2), provider.charge, 4999, idempotent=False)
    notes = getattr(info.value, "__notes__", [])
    assert len(notes) == 1 and "'key-7'" in notes[0] and "may still apply it" in notes[0]
    rec = Executor(clock=SystemClock(), key_factory=lambda: "key-8").run_sync(
        keyed_charge_recipe(2), Provider().charge, 1, idempotent=False
    )
    assert rec.outcome == "failed" and rec.in_doubt and rec.errors == ["timeout", "conflict"]
    assert any("may still apply it" in n for n in rec.notes)
    for _ in range(500):  # the abandoned attempt completes: the "failed" charge went through
        if provider.charges == 1:
            break
        time.sleep(0.01)
    assert provider.charges == 1 and provider.state["key-7"] == "charged 4999"


def test_a_cut_attempt_of_an_unkeyed_non_idempotent_call_is_in_doubt() -> None:
    release = threading.Event()

    def send(to: str) -> str:
        release.wait(10)  # slower than the recipe's timeout
        return "sent"

    recipe = {"scope": "mail.send", "steps": [{"type": "timeout", "ms": 50}]}
    try:
        rec = Executor(clock=SystemClock()).run_sync(recipe, send, "bob", idempotent=False)
    finally:
        release.set()
    assert rec.outcome == "failed" and rec.in_doubt and rec.errors == ["timeout"]
    (note,) = getattr(rec.error, "__notes__", [])
    assert "check with the provider before making the call again" in note


def test_an_async_cut_attempt_of_a_non_idempotent_call_is_in_doubt() -> None:
    async def send(to: str) -> str:
        await asyncio.sleep(10)
        return "sent"

    recipe = {"scope": "mail.send", "steps": [{"type": "timeout", "ms": 50}]}
    rec = asyncio.run(Executor().run_async(recipe, send, "bob", idempotent=False))
    assert rec.outcome == "failed" and rec.in_doubt
    assert len(getattr(rec.error, "__notes__", [])) == 1


def test_no_doubt_without_a_cut_attempt_or_for_an_idempotent_call() -> None:
    def refused(idempotency_key: str | None = None) -> str:
        raise Conflict("409 idempotency key in use")

    rec = Executor(clock=SystemClock()).run_sync(keyed_charge_recipe(3), refused, idempotent=False)
    assert rec.outcome == "failed" and not rec.in_doubt
    assert not getattr(rec.error, "__notes__", None) and not rec.notes
    release = threading.Event()

    def search(q: str) -> str:
        release.wait(10)
        return "hits"

    recipe = {"scope": "search.query", "steps": [{"type": "timeout", "ms": 50}]}
    try:
        rec = Executor(clock=SystemClock()).run_sync(recipe, search, "q", idempotent=True)
    finally:
        release.set()
    assert rec.outcome == "failed" and rec.errors == ["timeout"] and not rec.in_doubt
    assert not getattr(rec.error, "__notes__", None)


def test_a_call_in_doubt_gets_no_fallback() -> None:
    """A charge cut at its timeout may still go through at the provider; a fallback
    charging through another one would charge twice. An idempotent call cut the
    same way still falls back."""
    registry = LocalRegistry()
    used: list[str] = []
    registry.add_fallback("other_psp", lambda *a, **kw: used.append("other_psp") or "charged")
    release = threading.Event()

    def charge(amount: int) -> str:
        release.wait(10)
        return "charged"

    recipe = {
        "scope": "payments.charge",
        "steps": [{"type": "timeout", "ms": 50}, {"type": "fallback", "target": "other_psp"}],
    }
    ex = Executor(registry, clock=SystemClock())
    try:
        rec = ex.run_sync(recipe, charge, 5, idempotent=False)
        assert rec.outcome == "failed" and rec.in_doubt and used == []
        assert [(s.step, s.reason) for s in rec.skipped] == [
            ("fallback", "a cut attempt may still be applied")
        ]
        assert "fallback" not in rec.applied
        rec = ex.run_sync(recipe, charge, 5, idempotent=True)
        assert rec.outcome == "fallback" and not rec.in_doubt and used == ["other_psp"]
    finally:
        release.set()
