"""A breaker opened by an outage closes again once the service is back.

An idempotent call runs as written first; only when that attempt fails does the
SDK apply the fix, passing the failure as ``prior_error`` (it counts as the
first attempt and is recorded in the breaker). Such an attempt is never
guarded by the breaker, so it can fail while the breaker is open. It used to
re-open the breaker (``opened_at`` stamped again): after an outage every later
failure of the call re-armed it for another ``reset_ms`` before the retry could
take the half-open trial, so the fix never retried again and the calls' error
rate stayed that of no fix at all (s12 soak: the 5xx fix of ``inventory.get``
succeeded 10 times in 302 applications, none after a 4-minute outage).
"""

from __future__ import annotations

import random

from gossipmind.learn.breaker import BreakerBoard
from gossipmind.learn.executor import Executor
from gossipmind.learn.simulator import SimClock

RESET_MS = 30_000
RECIPE = {
    "budget_ms": 23_000,
    "scope": "inventory.get",
    "steps": [
        {
            "type": "retry",
            "max_attempts": 3,
            "base_ms": 250,
            "cap_ms": 4000,
            "jitter": "full",
            "on": ["server_error"],
        },
        {"type": "circuit_breaker", "failure_threshold": 10, "reset_ms": RESET_MS},
    ],
}
KEY = ("inventory", "get")


class Unavailable(Exception):
    status_code = 503


def test_a_failure_the_open_breaker_did_not_guard_does_not_keep_it_open() -> None:
    now = [0.0]
    board = BreakerBoard(lambda: now[0])
    for _ in range(3):
        board.record("k", "server_error", 3)
    assert board.state("k", 100) == "open"
    now[0] = 60.0
    board.record("k", "server_error", 3)  # a call's first attempt, made without the breaker
    now[0] = 100.0  # reset_ms after the breaker opened, not after that failure
    assert board.state("k", 100) == "half_open"
    assert board.allow("k", 100)  # the trial
    board.record("k", None, 3)
    assert board.state("k", 100) == "closed"


def test_the_half_open_trial_that_fails_opens_the_breaker_again() -> None:
    now = [0.0]
    board = BreakerBoard(lambda: now[0])
    board.record("k", "timeout", 1)
    now[0] = 100.0
    assert board.allow("k", 100)
    board.record("k", "timeout", 1)
    now[0] = 150.0
    assert board.state("k", 100) == "open" and not board.allow("k", 100)


def test_after_an_outage_the_fix_retries_a_failed_call_again() -> None:
    clock = SimClock()
    ex = Executor(clock=clock, rng=random.Random(1))
    down = [True]

    def get(sku: str) -> str:
        if down[0]:
            raise Unavailable("503 Service Unavailable")
        return sku

    def failed_call() -> tuple[str, str, int]:
        """The SDK's path for an idempotent call whose first attempt failed."""
        first = Unavailable("503 Service Unavailable")
        rec = ex.run_sync(RECIPE, get, "x", idempotent=True, prior_error=first, breaker_key=KEY)
        return rec.outcome, rec.stop, rec.attempts

    for _ in range(20):  # the outage: every call fails, the breaker opens
        failed_call()
        clock.advance(1000)
    assert ex.breakers.state(KEY, RESET_MS) == "open"
    down[0] = False
    clock.advance(120_000)  # the provider is back
    # now and then a call's first attempt fails; its retry succeeds
    results = []
    for _ in range(4):
        results.append(failed_call())
        clock.advance(60_000)
    assert results == [("success", "success", 2)] * 4
    assert ex.breakers.state(KEY, RESET_MS) == "closed"
