"""The executor against a fake flaky service, sync, in simulated time: each step does its job."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest

from gossipmind.core.errors import GossipmindError, SchemaError
from gossipmind.learn.breaker import (
    AttemptTimeout,
    BreakerBoard,
    CircuitOpen,
    SystemClock,
    default_classifier,
    retry_after_ms,
)
from gossipmind.learn.executor import Executor, LocalRegistry
from gossipmind.learn.simulator import SimClock


class HTTPError(Exception):
    def __init__(self, status: int, retry_after: Any = None, headers: Any = None) -> None:
        super().__init__(f"HTTP {status} for card 4111111111111111 user bob@example.com")
        self.status_code = status
        if retry_after is not None:
            self.retry_after = retry_after
        if headers is not None:
            self.response = type("R", (), {"headers": headers, "status_code": status})()


class Flaky:
    """A scripted service: each attempt takes ``latency`` simulated ms, then fails or answers."""

    def __init__(self, clock: SimClock, script: list[tuple[int, BaseException | None]]) -> None:
        self.clock, self.script = clock, list(script)
        self.calls: list[dict[str, Any]] = []
        self.started: list[float] = []

    def __call__(
        self, x: int = 0, *, idempotency_key: str | None = None, timeout_s: int = 0
    ) -> Any:
        self.started.append(self.clock.now_ms())
        self.calls.append({"x": x, "idempotency_key": idempotency_key, "timeout_s": timeout_s})
        latency, exc = self.script.pop(0) if self.script else (10, None)
        self.clock.advance(latency)
        if exc is not None:
            raise exc
        return ("ok", x)


def make(
    script: list[tuple[int, BaseException | None]], registry: LocalRegistry | None = None
) -> tuple[Executor, Flaky, SimClock]:
    clock = SimClock()
    n = iter(range(1000))
    ex = Executor(registry, clock=clock, rng=random.Random(1), key_factory=lambda: f"key-{next(n)}")
    return ex, Flaky(clock, script), clock


def recipe(*steps: dict[str, Any], budget: int | None = 60_000) -> dict[str, Any]:
    r: dict[str, Any] = {"scope": "weather.get", "steps": list(steps)}
    if budget is not None:
        r["budget_ms"] = budget
    return r


def retry(n: int = 3, base: int = 100, cap: int = 1000, jitter: str = "none", on: Any = None):
    return {
        "type": "retry",
        "max_attempts": n,
        "base_ms": base,
        "cap_ms": cap,
        "jitter": jitter,
        "on": on or ["server_error", "timeout"],
    }


E503 = HTTPError(503)


def test_retry_with_exponential_backoff_until_success() -> None:
    ex, svc, clock = make([(10, E503), (10, E503), (10, None)])
    rec = ex.run_sync(recipe(retry(4)), svc, 7, idempotent=True)
    assert rec.outcome == "success" and rec.value == ("ok", 7)
    assert rec.attempts == 3 and rec.errors == ["server_error", "server_error"]
    assert svc.started == [0, 110, 320]  # waits of 100 then 200 ms after 10 ms attempts
    assert rec.waited_ms == 300 and rec.elapsed_ms == 330 and clock.now_ms() == 330
    assert rec.applied == ["retry"] and rec.stop == "success"
    assert ex.execute_sync(recipe(retry(4)), svc, 8, idempotent=True) == ("ok", 8)


def test_backoff_is_capped_and_jitter_stays_within_bounds() -> None:
    ex, svc, _ = make([(0, E503)] * 9)
    rec = ex.run_sync(recipe(retry(10, base=100, cap=300)), svc, idempotent=True)
    waits = [b - a for a, b in zip(svc.started, svc.started[1:], strict=False)]
    assert waits == [100, 200] + [300] * 7
    assert rec.outcome == "success"
    for jitter in ("full", "equal"):
        ex, svc, _ = make([(0, E503)] * 9)
        ex.run_sync(recipe(retry(10, base=100, cap=300, jitter=jitter)), svc, idempotent=True)
        waits = [b - a for a, b in zip(svc.started, svc.started[1:], strict=False)]
        exp = [min(300, 100 * 2**i) for i in range(9)]
        lows = [0 if jitter == "full" else e // 2 for e in exp]
        assert all(lo <= w <= e for w, lo, e in zip(waits, lows, exp, strict=False))


def test_only_listed_error_classes_are_retried() -> None:
    ex, svc, _ = make([(10, HTTPError(422)), (10, None)])
    rec = ex.run_sync(recipe(retry(3)), svc, idempotent=True)
    assert rec.outcome == "failed" and rec.attempts == 1
    assert rec.stop == "not_retryable:validation"
    with pytest.raises(HTTPError):
        rec.unwrap()


def test_never_more_attempts_than_max_attempts() -> None:
    ex, svc, _ = make([(10, E503)] * 20)
    rec = ex.run_sync(recipe(retry(5)), svc, idempotent=True)
    assert rec.attempts == 5 == len(svc.calls) and rec.stop == "max_attempts"
    with pytest.raises(HTTPError) as info:
        ex.execute_sync(recipe(retry(5)), svc, idempotent=True)
    assert info.value is E503


def test_without_a_retry_step_there_is_one_attempt() -> None:
    ex, svc, _ = make([(10, E503), (10, None)])
    rec = ex.run_sync(recipe({"type": "timeout", "ms": 100}, budget=None), svc, idempotent=True)
    assert rec.attempts == 1 and rec.stop == "no_retry"


def test_budget_stops_before_a_wait_that_would_exceed_it() -> None:
    ex, svc, clock = make([(100, E503)] * 10)
    rec = ex.run_sync(recipe(retry(10, base=400, cap=10_000), budget=1000), svc, idempotent=True)
    # 100 + 400 wait + 100 = 600; next wait 800 would end at 1400 > 1000
    assert rec.attempts == 2 and rec.stop == "budget"
    assert rec.elapsed_ms == 600 <= 1000 and clock.now_ms() == 600


def test_an_attempt_is_cut_at_the_budget_deadline() -> None:
    ex, svc, _ = make([(5000, None)])
    rec = ex.run_sync(recipe(retry(3), budget=1500), svc, idempotent=True)
    assert isinstance(rec.error, AttemptTimeout) and isinstance(rec.error, TimeoutError)
    assert rec.elapsed_ms == 1500 and rec.errors == ["timeout"] and rec.stop == "budget"


def test_timeout_step_bounds_each_attempt() -> None:
    ex, svc, _ = make([(5000, None), (5000, None), (50, None)])
    steps = (retry(3, on=["timeout"]), {"type": "timeout", "ms": 1000})
    rec = ex.run_sync(recipe(*steps), svc, idempotent=True)
    assert rec.outcome == "success" and rec.errors == ["timeout", "timeout"]
    assert svc.started == [0, 1100, 2300]
    assert "timeout" in rec.applied


def test_respect_retry_after_waits_what_the_error_says() -> None:
    wall = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    date = format_datetime(datetime(2030, 1, 1, 0, 0, 4, tzinfo=UTC), usegmt=True)
    errors = [
        HTTPError(429, retry_after=2),
        HTTPError(429, headers={"retry-after": "3"}),
        HTTPError(429, headers={"Retry-After": date}),
    ]
    ex, svc, _ = make([(0, e) for e in errors])
    ex.wall_clock = lambda: wall
    steps = (retry(5, on=["rate_limited"]), {"type": "respect_retry_after", "max_wait_ms": 5000})
    rec = ex.run_sync(recipe(*steps), svc, idempotent=True)
    assert rec.outcome == "success"
    assert svc.started == [0, 2000, 5000, 9000]
    assert rec.waited_ms == 9000


def test_retry_after_beyond_max_wait_ends_the_call() -> None:
    ex, svc, _ = make([(0, HTTPError(429, retry_after=60)), (0, None)])
    steps = (retry(5, on=["rate_limited"]), {"type": "respect_retry_after", "max_wait_ms": 5000})
    rec = ex.run_sync(recipe(*steps), svc, idempotent=True)
    assert rec.attempts == 1 and rec.stop == "retry_after_exceeds_max_wait"


def test_without_respect_retry_after_the_hint_is_ignored() -> None:
    ex, svc, _ = make([(0, HTTPError(429, retry_after=60)), (0, None)])
    rec = ex.run_sync(recipe(retry(5, on=["rate_limited"])), svc, idempotent=True)
    assert rec.outcome == "success" and svc.started == [0, 100]


def test_non_idempotent_call_is_never_retried_without_a_key() -> None:
    ex, svc, _ = make([(10, E503), (10, None)])
    rec = ex.run_sync(recipe(retry(5)), svc, idempotent=False)
    assert rec.attempts == 1 and rec.stop == "non_idempotent" and rec.outcome == "failed"
    assert [s.step for s in rec.skipped] == ["retry"]


def test_idempotency_key_is_identical_on_every_retry() -> None:
    ex, svc, _ = make([(10, E503), (10, E503), (10, None)])
    steps = (retry(5), {"type": "idempotency_key", "header": "Idempotency-Key"})
    rec = ex.run_sync(recipe(*steps), svc, idempotent=False)
    assert rec.outcome == "success" and rec.attempts == 3
    assert [c["idempotency_key"] for c in svc.calls] == ["key-0"] * 3
    assert rec.idempotency_key == "key-0"
    # one key per logical call: the next call gets a fresh one
    ex.run_sync(recipe(*steps), svc, idempotent=False)
    assert svc.calls[-1]["idempotency_key"] == "key-1"
    # the caller's own key wins
    ex.run_sync(recipe(*steps), svc, idempotent=False, idempotency_key="mine")
    assert svc.calls[-1]["idempotency_key"] == "mine"


def test_idempotency_key_goes_in_headers_when_the_function_takes_headers() -> None:
    seen: list[dict[str, str]] = []

    def post(url: str, headers: dict[str, str] | None = None) -> str:
        seen.append(dict(headers or {}))
        if len(seen) < 3:
            raise ConnectionResetError("reset")
        return "done"

    ex, _, _ = make([])
    steps = (retry(5, on=["connection"]), {"type": "idempotency_key", "header": "Idem-Key"})
    rec = ex.run_sync(recipe(*steps), post, "/charge", idempotent=False, headers={"A": "1"})
    assert rec.outcome == "success"
    assert seen == [{"A": "1", "Idem-Key": "key-0"}] * 3


def test_a_key_that_cannot_be_delivered_does_not_count() -> None:
    def charge(amount: int) -> None:
        raise ConnectionResetError("reset")

    ex, _, _ = make([])
    steps = (retry(5, on=["connection"]), {"type": "idempotency_key", "header": "K"})
    rec = ex.run_sync(recipe(*steps), charge, 10, idempotent=False)
    assert rec.attempts == 1 and rec.idempotency_key is None
    assert {s.step for s in rec.skipped} == {"idempotency_key", "retry"}


def test_prior_error_counts_as_the_first_attempt() -> None:
    ex, svc, _ = make([(10, E503), (10, None)])
    rec = ex.run_sync(recipe(retry(3)), svc, idempotent=True, prior_error=E503)
    assert rec.outcome == "success" and rec.attempts == 3 and len(svc.calls) == 2
    # a non-idempotent call that already failed without a key is not retried, key or not
    ex, svc, _ = make([(10, None)])
    steps = (retry(3), {"type": "idempotency_key", "header": "K"})
    rec = ex.run_sync(recipe(*steps), svc, idempotent=False, prior_error=E503)
    assert rec.attempts == 1 and svc.calls == [] and rec.error is E503


def test_set_param_only_from_the_local_allow_list() -> None:
    reg = LocalRegistry()
    reg.allow_param("timeout_s", lambda v: isinstance(v, int) and v <= 30)
    ex, svc, _ = make([(10, None)] * 5, reg)
    ex.run_sync(
        recipe({"type": "set_param", "name": "timeout_s", "value": 20}), svc, idempotent=True
    )
    assert svc.calls[-1]["timeout_s"] == 20
    rec = ex.run_sync(
        recipe({"type": "set_param", "name": "timeout_s", "value": 99}), svc, idempotent=True
    )
    assert svc.calls[-1]["timeout_s"] == 0 and "refused" in rec.skipped[0].reason
    rec = ex.run_sync(recipe({"type": "set_param", "name": "x", "value": 5}), svc, idempotent=True)
    assert svc.calls[-1]["x"] == 0 and "allow-list" in rec.skipped[0].reason
    reg.allow_param("verify")
    rec = ex.run_sync(
        recipe({"type": "set_param", "name": "verify", "value": False}), svc, idempotent=True
    )
    assert rec.outcome == "success" and "takes no" in rec.skipped[0].reason


def test_fallback_to_a_registered_alternative_only() -> None:
    reg = LocalRegistry()
    reg.add_fallback("cache", lambda x=0: ("cached", x))
    ex, svc, _ = make([(10, E503)] * 10, reg)
    rec = ex.run_sync(
        recipe(retry(2), {"type": "fallback", "target": "cache"}), svc, 3, idempotent=True
    )
    assert rec.outcome == "fallback" and rec.value == ("cached", 3) and rec.fallback == "cache"
    assert rec.unwrap() == ("cached", 3) and rec.attempts == 2
    rec = ex.run_sync(
        recipe(retry(2), {"type": "fallback", "target": "os.system"}), svc, idempotent=True
    )
    assert (
        rec.outcome == "failed" and rec.skipped[0].reason == "no local fallback named 'os.system'"
    )
    reg.add_fallback("broken", lambda x=0: 1 / 0)
    rec = ex.run_sync(
        recipe(retry(2), {"type": "fallback", "target": "broken"}), svc, idempotent=True
    )
    assert rec.error is E503 and rec.notes == ["fallback 'broken' failed: ZeroDivisionError"]


def test_escalate_gets_a_redacted_summary_then_the_error_is_reraised() -> None:
    got: list[dict[str, Any]] = []
    reg = LocalRegistry()
    reg.add_escalation("oncall", got.append)
    ex, svc, _ = make([(10, E503)] * 10, reg)
    r = recipe(retry(2), {"type": "escalate", "to": "oncall"})
    with pytest.raises(HTTPError):
        ex.execute_sync(r, svc, 4111111111111111, idempotent=True)
    (summary,) = got
    assert summary["errors"] == ["server_error", "server_error"]
    assert summary["error_type"] == "HTTPError" and summary["attempts"] == 2
    text = repr(summary)
    assert "4111" not in text and "example.com" not in text
    rec = ex.run_sync(recipe({"type": "escalate", "to": "nobody"}), svc, idempotent=True)
    assert rec.escalated is None and rec.skipped[0].step == "escalate"

    def boom(_s: dict[str, Any]) -> None:
        raise RuntimeError("handler down")

    reg.add_escalation("boom", boom)
    rec = ex.run_sync(recipe({"type": "escalate", "to": "boom"}), svc, idempotent=True)
    assert rec.error is E503 and rec.escalated == "boom" and "RuntimeError" in rec.notes[0]


def test_circuit_breaker_opens_rejects_then_half_opens() -> None:
    reg = LocalRegistry()
    reg.add_fallback("stale", lambda: "stale")
    ex, svc, clock = make([(10, E503)] * 2 + [(10, None)] * 5, reg)
    cb = {"type": "circuit_breaker", "failure_threshold": 2, "reset_ms": 1000}
    r = recipe(retry(2), cb)
    rec = ex.run_sync(r, svc, idempotent=True, breaker_key=("weather", "get"))
    assert rec.attempts == 2 and ex.breakers.state(("weather", "get")) == "open"
    rec = ex.run_sync(r, svc, idempotent=True, breaker_key=("weather", "get"))
    assert isinstance(rec.error, CircuitOpen) and rec.attempts == 0 and len(svc.calls) == 2
    rec = ex.run_sync(
        recipe(retry(2), cb, {"type": "fallback", "target": "stale"}),
        svc,
        idempotent=True,
        breaker_key=("weather", "get"),
    )
    assert rec.outcome == "fallback" and len(svc.calls) == 2
    clock.advance(1000)
    assert ex.breakers.state(("weather", "get"), 1000) == "half_open"
    rec = ex.run_sync(r, svc, idempotent=True, breaker_key=("weather", "get"))
    assert rec.outcome == "success" and ex.breakers.state(("weather", "get")) == "closed"


def test_an_opening_breaker_ends_the_retry_loop() -> None:
    ex, svc, _ = make([(10, E503)] * 10)
    cb = {"type": "circuit_breaker", "failure_threshold": 1, "reset_ms": 60_000}
    rec = ex.run_sync(recipe(retry(5), cb), svc, idempotent=True)
    assert rec.attempts == 1 and rec.stop == "circuit_open"


def test_client_errors_do_not_trip_the_breaker() -> None:
    board = BreakerBoard(lambda: 0.0)
    for _ in range(5):
        board.record("k", "server_error", 3)
        board.record("k", "not_found", 3)
    assert board.state("k") == "closed"
    board.record("k", "timeout", 1)
    assert board.state("k") == "open" and not board.allow("k", 10)


def test_half_open_allows_a_single_trial() -> None:
    now = [0.0]
    board = BreakerBoard(lambda: now[0])
    board.record("k", "timeout", 1)
    now[0] = 100.0
    assert board.allow("k", 100) and not board.allow("k", 100)
    board.release("k")
    assert board.allow("k", 100)
    board.record("k", "timeout", 1)
    assert board.state("k") == "open" and not board.allow("k", 100)


def test_invalid_recipes_are_refused_before_any_call() -> None:
    ex, svc, _ = make([])
    with pytest.raises(SchemaError):
        ex.run_sync(
            {"scope": "x", "steps": [{"type": "exec", "code": "rm -rf /"}]}, svc, idempotent=True
        )
    with pytest.raises(SchemaError):
        ex.run_sync(recipe(retry(3), budget=None), svc, idempotent=True)
    assert svc.calls == []


def test_base_exceptions_are_never_retried_or_swallowed() -> None:
    class Stop(BaseException):
        pass

    ex, svc, _ = make([(10, Stop())])
    with pytest.raises(Stop):
        ex.run_sync(recipe(retry(5)), svc, idempotent=True)
    assert len(svc.calls) == 1


def test_a_broken_classifier_counts_as_unknown() -> None:
    def bad(_e: BaseException) -> str:
        raise RuntimeError("bug")

    ex, svc, _ = make([(10, E503)])
    ex.classifier = bad
    rec = ex.run_sync(recipe(retry(3, on=["unknown"])), svc, idempotent=True)
    assert rec.errors == ["unknown"] and rec.outcome == "success"
    ex.classifier = lambda _e: "not-a-class"
    assert ex.classify(E503) == "unknown"


def test_default_classifier() -> None:
    cases: list[tuple[BaseException, str]] = [
        (TimeoutError(), "timeout"),
        (AttemptTimeout("x"), "timeout"),
        (HTTPError(408), "timeout"),
        (HTTPError(429), "rate_limited"),
        (HTTPError(401), "auth"),
        (HTTPError(404), "not_found"),
        (HTTPError(409), "conflict"),
        (HTTPError(400), "validation"),
        (HTTPError(502), "server_error"),
        (ConnectionRefusedError(), "connection"),
        (PermissionError(), "auth"),
        (KeyError("k"), "validation"),
        (ValueError(), "validation"),
        (RuntimeError(), "unknown"),
    ]
    for exc, cls in cases:
        assert default_classifier(exc) == cls, exc
    too_slow = type("TooSlowError", (Exception,), {})
    assert default_classifier(too_slow()) == "timeout"


def test_retry_after_parsing() -> None:
    assert retry_after_ms(HTTPError(429, retry_after=1.5)) == 1500
    assert retry_after_ms(HTTPError(429, retry_after="2")) == 2000
    assert retry_after_ms(HTTPError(429, headers={"Retry-After": "soon"})) is None
    assert retry_after_ms(HTTPError(429)) is None
    e = HTTPError(503)
    e.retry_after_ms = 250  # type: ignore[attr-defined]
    assert retry_after_ms(e) == 250


def test_sync_timeout_runs_the_attempt_in_a_thread_and_abandons_it() -> None:
    release = threading.Event()
    threads: list[int] = []

    def hang() -> str:
        threads.append(threading.get_ident())
        release.wait(10)
        return "late"

    ex = Executor()  # the real SystemClock
    rec = ex.run_sync(recipe({"type": "timeout", "ms": 30}, budget=None), hang, idempotent=True)
    release.set()
    assert isinstance(rec.error, AttemptTimeout) and rec.errors == ["timeout"]
    assert threads and threads[0] != threading.get_ident()
    # errors raised in the worker thread reach the caller unchanged
    with pytest.raises(ZeroDivisionError):
        SystemClock().call_with_timeout(lambda: 1 / 0, 5000)
    assert SystemClock().call_with_timeout(lambda: 42, 5000) == 42


def test_sync_timeouts_can_be_disabled() -> None:
    idents: list[int] = []
    ex = Executor(sync_timeouts=False)
    rec = ex.run_sync(
        recipe({"type": "timeout", "ms": 30}, budget=None),
        lambda: idents.append(threading.get_ident()),
        idempotent=True,
    )
    assert idents == [threading.get_ident()] and rec.skipped[0].step == "timeout"


def test_errors_derive_from_the_root() -> None:
    assert issubclass(AttemptTimeout, GossipmindError) and issubclass(CircuitOpen, GossipmindError)


def test_summary_is_plain_data() -> None:
    ex, svc, _ = make([(10, E503), (10, None)])
    rec = ex.run_sync(
        recipe(retry(3), {"type": "fallback", "target": "nope"}), svc, idempotent=True
    )
    s = rec.summary()
    assert s["outcome"] == "success" and s["skipped"] == [
        ["fallback", "no local fallback named 'nope'"]
    ]


def test_a_sleep_that_overshoots_the_budget_starts_no_further_attempt() -> None:
    class Overshooting(SimClock):
        def sleep_ms(self, ms: int) -> None:
            super().sleep_ms(ms + 10_000)  # a real sleep can wake up late

    clock = Overshooting()
    svc = Flaky(clock, [(10, E503)] * 5)
    rec = Executor(clock=clock).run_sync(recipe(retry(5), budget=1000), svc, idempotent=True)
    assert len(svc.calls) == 1 == rec.attempts and rec.stop == "budget"
    assert rec.error is E503  # the call's own error, not gossipmind's AttemptTimeout


def test_headers_that_are_not_a_mapping_are_left_alone() -> None:
    def post(headers: Any = None) -> None:
        raise ConnectionResetError("reset")

    ex, _, _ = make([])
    steps = (retry(3, on=["connection"]), {"type": "idempotency_key", "header": "K"})
    rec = ex.run_sync(recipe(*steps), post, idempotent=False, headers=[("A", "1")])
    assert rec.attempts == 1 and {s.step for s in rec.skipped} == {"idempotency_key", "retry"}


def test_a_retry_after_that_is_not_a_number_is_ignored() -> None:
    errors = [HTTPError(503, headers={"Retry-After": v}) for v in ("inf", "1e999", "Infinity")]
    ex, svc, _ = make([(0, e) for e in errors])
    steps = (retry(5), {"type": "respect_retry_after", "max_wait_ms": 5000})
    rec = ex.run_sync(recipe(*steps), svc, idempotent=True)
    assert rec.outcome == "success" and rec.errors == ["server_error"] * 3
    assert svc.started == [0, 100, 300, 700]  # plain backoff: the hints counted as absent


def test_a_hint_that_cannot_be_read_never_replaces_the_calls_error() -> None:
    class Broken(dict[str, str]):
        def get(self, *_: Any) -> Any:
            raise RuntimeError("broken headers object")

    final = HTTPError(503, headers=Broken())
    ex, svc, _ = make([(0, E503), (0, final)])
    steps = (retry(2), {"type": "respect_retry_after", "max_wait_ms": 5000})
    rec = ex.run_sync(recipe(*steps), svc, idempotent=True)
    assert rec.error is final and rec.errors == ["server_error"] * 2 and rec.attempts == 2


@pytest.mark.parametrize("spelling", ["Idem-Key", "idem-key", "IDEM-KEY"])
def test_a_key_already_in_the_callers_headers_wins_in_any_case(spelling: str) -> None:
    seen: list[dict[str, str]] = []

    def post(url: str, headers: dict[str, str] | None = None) -> str:
        seen.append(dict(headers or {}))
        if len(seen) < 3:
            raise ConnectionResetError("reset")
        return "done"

    ex, _, _ = make([])
    steps = (retry(5, on=["connection"]), {"type": "idempotency_key", "header": "Idem-Key"})
    hdrs = {"A": "1", spelling: "order-42"}
    rec = ex.run_sync(recipe(*steps), post, "/charge", idempotent=False, headers=hdrs)
    assert rec.outcome == "success" and rec.idempotency_key == "order-42"
    assert seen == [hdrs] * 3  # the caller's name and value, no second spelling
    # an empty value is no key: a fresh one goes under the caller's spelling
    seen.clear()
    rec = ex.run_sync(recipe(*steps), post, "/c", idempotent=False, headers={spelling: ""})
    assert seen == [{spelling: rec.idempotency_key}] * 3 and rec.idempotency_key == "key-0"


@pytest.mark.parametrize("header", ["Authorization", "Cookie", "X-Api-Key", "Host"])
def test_a_recipe_never_sets_a_header_that_is_not_an_idempotency_key(header: str) -> None:
    """The op schema lets a recipe name any header; one naming Authorization would
    replace the agent's credentials with a random key. The step is skipped."""
    seen: list[dict[str, str]] = []

    def post(url: str, headers: dict[str, str] | None = None) -> str:
        seen.append(dict(headers or {}))
        return "done"

    ex, _, _ = make([])
    steps = ({"type": "idempotency_key", "header": header},)
    hdrs = {"Authorization": "Bearer AGENT-SECRET"}
    rec = ex.run_sync(recipe(*steps), post, "/charge", idempotent=False, headers=hdrs)
    assert rec.outcome == "success" and seen == [hdrs]
    assert rec.idempotency_key is None
    assert [(s.step, "idempotency key" in s.reason) for s in rec.skipped] == [
        ("idempotency_key", True)
    ]
