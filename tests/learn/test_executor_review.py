"""Executor defects a code review found: each test failed on the code before its fix.

- a budget that ran out after a half-open breaker gave its trial slot to an attempt
  kept that slot for good (every later call: ``CircuitOpen``);
- under tenacity 8.2 (which asks ``stop`` before ``wait``) neither the budget nor
  ``max_wait_ms`` bounded the first wait;
- a retry step moved every sync attempt onto a worker thread;
- a sleep that ended past the budget replaced the call's own error with ``AttemptTimeout``.

Real time here uses the real ``SystemClock``; ``LateClock`` only oversleeps on purpose
(as ``time.sleep`` may), so that the budget has surely run out after a wait.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from tenacity import RetryCallState

from gossipmind.learn import executor as executor_module
from gossipmind.learn.breaker import CircuitOpen, SystemClock
from gossipmind.learn.executor import Executor
from gossipmind.learn.simulator import AsyncSimClock, SimClock

ROOT = Path(__file__).resolve().parents[2]


class Upstream503(Exception):
    status_code = 503


class Limited(Exception):
    status_code = 429

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__("429 Too Many Requests")
        self.retry_after_ms = retry_after_ms


class LateClock(SystemClock):
    """The real clock, whose sleeps end 200 ms late (``time.sleep`` only promises 'at least')."""

    def sleep_ms(self, ms: int) -> None:
        super().sleep_ms(ms + 200)


def retry(n: int, base: int, on: list[str], jitter: str = "none") -> dict[str, Any]:
    return {
        "type": "retry",
        "max_attempts": n,
        "base_ms": base,
        "cap_ms": base,
        "jitter": jitter,
        "on": on,
    }


BREAKER = {"type": "circuit_breaker", "failure_threshold": 1, "reset_ms": 50}
KEY = {"type": "idempotency_key", "header": "Idempotency-Key"}
# one attempt (fails at once), a 50 ms wait that the budget allows, a sleep that ends
# 200 ms late: the budget (200 ms) has run out before the second attempt, and the breaker
# (opened by the failure, reset_ms 50) reads half-open by then
OVERRUN = {
    "scope": "svc.op",
    "budget_ms": 200,
    "steps": [retry(2, 50, ["server_error"]), BREAKER],
}


# ------------------------------------------------------- 1. the half-open trial slot


def test_a_budget_overrun_never_keeps_the_half_open_trial_slot() -> None:
    ex = Executor(clock=LateClock())
    calls: list[str] = []

    def down() -> None:
        calls.append("down")
        raise Upstream503("503 Service Unavailable")

    def healthy() -> str:
        calls.append("healthy")
        return "ok"

    first = ex.run_sync(OVERRUN, down, idempotent=True, breaker_key="svc")
    assert first.outcome == "failed" and first.attempts == 1
    for _ in range(3):  # the service is back; reset_ms (50) has long passed
        later = ex.run_sync(OVERRUN, healthy, idempotent=True, breaker_key="svc")
        assert later.outcome == "success", later.error
        assert not isinstance(later.error, CircuitOpen)
    assert calls == ["down", "healthy", "healthy", "healthy"]


def test_a_preventive_keyed_call_is_not_refused_for_ever_after_a_budget_overrun() -> None:
    """The SDK's path for a non-idempotent call: the keyed fix from the first attempt."""
    keyed = {**OVERRUN, "steps": [*OVERRUN["steps"], KEY]}
    ex = Executor(clock=LateClock())
    keys: list[str | None] = []

    def charge(idempotency_key: str | None = None) -> str:
        keys.append(idempotency_key)
        if len(keys) == 1:
            raise Upstream503("503 Service Unavailable")
        return "charged"

    ex.run_sync(keyed, charge, idempotent=False, breaker_key=b"pattern")
    rec = ex.run_sync(keyed, charge, idempotent=False, breaker_key=b"pattern")
    assert rec.outcome == "success", rec.error
    assert rec.value == "charged" and len(keys) == 2


# -------------------------------------------------- 7. the call's own error is kept


def test_a_sleep_past_the_budget_ends_with_the_calls_own_error() -> None:
    err = Upstream503("503 Service Unavailable")

    def down() -> None:
        raise err

    recipe = {"scope": "svc.op", "budget_ms": 200, "steps": [retry(3, 50, ["server_error"])]}
    for ex in (Executor(clock=LateClock()), Executor(clock=LateClock(), sync_timeouts=False)):
        rec = ex.run_sync(recipe, down, idempotent=True)
        assert rec.error is err and rec.stop == "budget"
        assert rec.attempts == 1 and rec.errors == ["server_error"]  # no attempt after it
        with pytest.raises(Upstream503) as info:
            ex.execute_sync(recipe, down, idempotent=True)
        assert info.value is err


# ------------------------------------------- 3. tenacity 8.2 asks stop before wait


class Retrying82:
    """tenacity 8.2's loop: after a failed attempt, ``retry``, then ``stop``, then ``wait``.

    (tenacity 8.3 and later ask ``wait`` before ``stop``.) The hooks it was given are
    called in that order, with tenacity's own ``RetryCallState``.
    """

    def __init__(self, *, sleep: Any, retry: Any, wait: Any, stop: Any, reraise: bool) -> None:
        self.sleep, self.retry, self.wait, self.stop = sleep, retry, wait, stop
        self.hooks: list[str] = []
        assert reraise

    def next_step(self, rs: RetryCallState) -> float | None:
        """None: the outcome stands; else the seconds to sleep before the next attempt."""
        self.hooks.append("retry")
        if not self.retry(rs):
            return None
        self.hooks.append("stop")
        if self.stop(rs):
            return None
        self.hooks.append("wait")
        return float(self.wait(rs))

    def __call__(self, fn: Callable[[], Any]) -> Any:
        rs = RetryCallState(self, fn, (), {})
        for _ in range(50):
            try:
                rs.set_result(fn())
            except BaseException:  # recorded in the outcome, as tenacity does
                rs.set_exception(sys.exc_info())  # type: ignore[arg-type]
            seconds = self.next_step(rs)
            assert rs.outcome is not None
            if seconds is None:
                return rs.outcome.result()
            rs.prepare_for_next_attempt()
            self.sleep(seconds)
        raise AssertionError("more than 50 attempts")


class AsyncRetrying82(Retrying82):
    async def __call__(self, fn: Callable[[], Any]) -> Any:  # type: ignore[override]
        rs = RetryCallState(self, fn, (), {})
        for _ in range(50):
            try:
                rs.set_result(await fn())
            except BaseException:  # recorded in the outcome, as tenacity does
                rs.set_exception(sys.exc_info())  # type: ignore[arg-type]
            seconds = self.next_step(rs)
            assert rs.outcome is not None
            if seconds is None:
                return rs.outcome.result()
            rs.prepare_for_next_attempt()
            await self.sleep(seconds)
        raise AssertionError("more than 50 attempts")


@pytest.fixture
def tenacity_82(monkeypatch: pytest.MonkeyPatch) -> list[Retrying82]:
    made: list[Retrying82] = []

    def sync(**kw: Any) -> Retrying82:
        made.append(Retrying82(**kw))
        return made[-1]

    def aio(**kw: Any) -> AsyncRetrying82:
        made.append(AsyncRetrying82(**kw))
        return made[-1]  # type: ignore[return-value]

    monkeypatch.setattr(executor_module, "Retrying", sync)
    monkeypatch.setattr(executor_module, "AsyncRetrying", aio)
    return made


LIMITED = {
    "scope": "svc.op",
    "budget_ms": 2000,
    "steps": [
        {"type": "respect_retry_after", "max_wait_ms": 1000},
        retry(3, 100, ["rate_limited"]),
    ],
}
SLOW_BACKOFF = {"scope": "svc.op", "budget_ms": 1000, "steps": [retry(2, 1500, ["server_error"])]}


@pytest.mark.parametrize("hint", [5_000, 2**31 - 1])
def test_with_stop_asked_first_max_wait_still_refuses_a_long_retry_after(
    tenacity_82: list[Retrying82], hint: int
) -> None:
    clock = SimClock()
    err = Limited(hint)

    def limited() -> None:
        raise err

    rec = Executor(clock=clock).run_sync(LIMITED, limited, idempotent=True)
    assert rec.attempts == 1 and rec.waited_ms == 0 and clock.slept_ms == 0
    assert rec.stop == "retry_after_exceeds_max_wait" and rec.error is err
    assert tenacity_82[0].hooks == ["retry", "stop"]  # stop was asked before any wait


def test_with_stop_asked_first_the_budget_still_refuses_a_long_backoff(
    tenacity_82: list[Retrying82],
) -> None:
    clock = SimClock()
    err = Upstream503("503")

    def down() -> None:
        raise err

    rec = Executor(clock=clock).run_sync(SLOW_BACKOFF, down, idempotent=True)
    assert rec.waited_ms == 0 and clock.slept_ms == 0
    assert rec.stop == "budget" and rec.error is err
    assert tenacity_82[0].hooks == ["retry", "stop"]

    async def adown() -> None:
        raise err

    aclock = AsyncSimClock()
    arec = asyncio.run(Executor(async_clock=aclock).run_async(SLOW_BACKOFF, adown, idempotent=True))
    assert arec.waited_ms == 0 and arec.stop == "budget" and arec.error is err
    assert tenacity_82[1].hooks == ["retry", "stop"]


def jittered_run(clock: SimClock) -> tuple[Any, ...]:
    """A call with full jitter, Retry-After hints and a budget that ends it; what it did."""
    script = iter([Upstream503("503"), Limited(300), Upstream503("503"), Limited(700)] * 3)
    started: list[float] = []

    def svc() -> None:
        started.append(clock.now_ms())
        clock.advance(40)
        raise next(script)

    recipe = {
        "scope": "svc.op",
        "budget_ms": 2900,
        "steps": [
            {"type": "respect_retry_after", "max_wait_ms": 1000},
            retry(10, 400, ["rate_limited", "server_error"], jitter="full"),
        ],
    }
    rec = Executor(clock=clock, rng=random.Random(7)).run_sync(recipe, svc, idempotent=True)
    return tuple(started), rec.attempts, rec.waited_ms, rec.elapsed_ms, rec.stop


def test_stop_first_or_wait_first_the_same_call_does_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wait_first = jittered_run(SimClock())  # the installed tenacity (8.3 or later)
    assert wait_first[4] == "budget" and wait_first[1] > 2
    monkeypatch.setattr(executor_module, "Retrying", Retrying82)
    assert jittered_run(SimClock()) == wait_first  # same waits: the RNG is drawn once each


def test_the_tenacity_pin_excludes_the_8_2_releases() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in deps if Requirement(d).name == "tenacity"]
    assert not any(pin.specifier.contains(v) for v in ("8.2.0", "8.2.2", "8.2.3"))
    assert all(pin.specifier.contains(v) for v in ("8.3.0", "9.0.0", "9.1.2"))


# ------------------------------------- 6. a retry fix keeps a sync call on its thread


def test_a_retry_fix_keeps_a_sync_call_on_the_callers_thread(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "agent.db")  # check_same_thread=True, as by default
    db.execute("create table t (x)")
    db.execute("insert into t values (1)")
    db.commit()
    local = threading.local()
    local.session = "the caller's session"
    seen: list[tuple[int, Any]] = []

    def query() -> int:
        seen.append((threading.get_ident(), getattr(local, "session", None)))
        if len(seen) == 1:
            raise ConnectionError("connection reset")
        return int(db.execute("select count(*) from t").fetchone()[0])

    recipe = {"scope": "db.query", "budget_ms": 5000, "steps": [retry(3, 1, ["connection"])]}
    rec = Executor().run_sync(recipe, query, idempotent=True)  # the real SystemClock
    db.close()
    assert rec.outcome == "success" and rec.value == 1 and rec.errors == ["connection"]
    assert seen == [(threading.get_ident(), "the caller's session")] * 2


def test_without_a_timeout_step_the_budget_is_checked_between_attempts() -> None:
    err = Upstream503("503")
    calls: list[int] = []

    def slow_then_down() -> None:
        calls.append(threading.get_ident())
        threading.Event().wait(0.25)  # longer than the whole budget
        raise err

    recipe = {"scope": "svc.op", "budget_ms": 100, "steps": [retry(3, 1, ["server_error"])]}
    rec = Executor().run_sync(recipe, slow_then_down, idempotent=True)
    assert calls == [threading.get_ident()]  # not cut, not moved, and no second attempt
    assert rec.error is err and rec.stop == "budget" and rec.attempts == 1


def test_a_timeout_step_still_bounds_the_attempt_in_a_worker_thread() -> None:
    idents: list[int] = []
    release = threading.Event()

    def hang() -> str:
        idents.append(threading.get_ident())
        release.wait(10)
        return "late"

    recipe = {
        "scope": "svc.op",
        "budget_ms": 5000,
        "steps": [retry(2, 1, ["timeout"]), {"type": "timeout", "ms": 30}],
    }
    rec = Executor().run_sync(recipe, hang, idempotent=True)
    release.set()
    assert rec.errors == ["timeout", "timeout"] and rec.stop == "max_attempts"
    assert len(idents) == 2 and threading.get_ident() not in idents
