"""The fault simulator: seeded, pure, in simulated time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmind.core.errors import SchemaError
from gossipmind.learn.breaker import AttemptTimeout
from gossipmind.learn.simulator import (
    AsyncSimClock,
    FaultModel,
    SimClock,
    SimulatedFault,
    SimulatedService,
    latency_table,
)

MODEL = FaultModel(
    failure_bp={"server_error": 2000, "timeout": 1000, "rate_limited": 500},
    latency_median_ms=120,
    latency_p95_ms=900,
    hang_ms=5000,
    retry_after_ms=1500,
    burst_period_ms=60_000,
    burst_len_ms=5000,
)


def trace(seed: int, n: int = 300) -> list[tuple[int, str | None, int | None, float]]:
    clock = SimClock()
    svc = SimulatedService(MODEL, seed, clock)
    out = []
    for i in range(n):
        clock.t = max(clock.t, i * 700)
        t0 = clock.t
        try:
            svc()
            cls, hint = None, None
        except SimulatedFault as e:
            cls, hint = e.error_class, getattr(e, "retry_after_ms", None)
        out.append((int(clock.t - t0), cls, hint, t0))
    return out


def test_same_seed_same_outcomes_different_seed_different() -> None:
    assert trace(7) == trace(7)
    assert trace(7) != trace(8)


def test_decisions_follow_the_model() -> None:
    outcomes = trace(3, 2000)
    classes = [c for _, c, _, _ in outcomes]
    failures = sum(c is not None for c in classes) / len(classes)
    assert 0.4 < failures < 0.7  # 35 % plus bursts (8 %) and rate-limit windows
    assert {c for c in classes if c} == {"server_error", "timeout", "rate_limited"}
    assert all(lat == 5000 for lat, c, _, _ in outcomes if c == "timeout")
    answered = sorted(lat for lat, c, _, _ in outcomes if c is None)
    median = answered[len(answered) // 2]
    assert 90 <= median <= 160


def test_rate_limit_window_refuses_until_it_ends() -> None:
    clock = SimClock()
    model = FaultModel(failure_bp={"rate_limited": 10_000}, retry_after_ms=2000)
    svc = SimulatedService(model, 1, clock)
    d1 = svc.decide(0)
    assert d1.error_class == "rate_limited" and d1.retry_after_ms == 2000
    d2 = svc.decide(500)
    assert d2.error_class == "rate_limited" and d2.retry_after_ms == 1500
    assert svc.decide(1999).error_class == "rate_limited"
    calm = SimulatedService(FaultModel(retry_after_ms=2000), 1, clock)
    calm.windows = [0]  # a window left by an earlier 429 at t=0
    assert calm.decide(-1).error_class is None  # windows are intervals: not before they open
    assert calm.decide(1999).error_class == "rate_limited"
    assert calm.decide(2000).error_class is None  # after the window: the model's own odds


def test_outage_bursts() -> None:
    model = FaultModel(burst_period_ms=10_000, burst_len_ms=2000, burst_class="connection")
    svc = SimulatedService(model, 5)
    down = [t for t in range(0, 40_000, 100) if svc.in_burst(t)]
    assert len(down) == 80  # 20 % of the time
    assert all(svc.decide(t).error_class == "connection" for t in down[:10])
    up = [t for t in range(0, 40_000, 100) if not svc.in_burst(t)]
    assert all(svc.decide(t).error_class is None for t in up[:50])


def test_latency_table_is_monotone_and_matches_median_and_p95() -> None:
    table = latency_table(100, 800)
    assert list(table) == sorted(table)
    n = len(table)
    assert table[n // 2 - 1] <= 100 <= table[n // 2]
    p95 = table[int(n * 0.95)]
    assert 780 <= p95 <= 820
    assert latency_table(100, 50) == (100,) * n


def test_from_pattern() -> None:
    m = FaultModel.from_pattern(
        {"error_class": "timeout", "latency_ms_avg": 8000, "latency_n": 3}, failure_bp=2500
    )
    assert m.failure_bp == {"timeout": 2500} and m.hang_ms == 8000
    m = FaultModel.from_pattern(
        {"error_class": "rate_limited", "retry_after_ms_max": 3000, "retry_after_n": 2}
    )
    assert m.retry_after_ms == 3000 and m.failure_bp == {"rate_limited": 3000}
    m = FaultModel.from_pattern({"error_class": "rate_limited"})
    assert m.retry_after_ms == 1000
    m = FaultModel.from_pattern({"error_class": "bogus"})
    assert m.failure_bp == {"unknown": 3000}


def test_model_validation() -> None:
    with pytest.raises(SchemaError):
        FaultModel(failure_bp={"timeout": 6000, "server_error": 6000})
    with pytest.raises(SchemaError):
        FaultModel(failure_bp={"meteor": 10})
    with pytest.raises(SchemaError):
        FaultModel(burst_period_ms=100, burst_len_ms=200)
    with pytest.raises(SchemaError):
        FaultModel(hang_ms=-1)


def test_sim_clock_cuts_calls_at_the_limit() -> None:
    clock = SimClock(1000)

    def slow() -> str:
        clock.advance(500)
        return "late"

    with pytest.raises(AttemptTimeout):
        clock.call_with_timeout(slow, 200)
    assert clock.now_ms() == 1200
    assert clock.call_with_timeout(slow, 500) == "late" and clock.now_ms() == 1700
    clock.sleep_ms(300)
    assert clock.now_ms() == 2000 and clock.slept_ms == 300
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert isinstance(clock.aio(), AsyncSimClock) and clock.aio().now_ms() == 2000


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(1, 5000), st.integers(1, 50_000))
def test_any_seed_is_reproducible(seed: int, median: int, p95: int) -> None:
    model = FaultModel(
        failure_bp={"server_error": 3000}, latency_median_ms=median, latency_p95_ms=p95
    )
    a, b = SimulatedService(model, seed), SimulatedService(model, seed)
    assert [a.decide(t * 10) for t in range(50)] == [b.decide(t * 10) for t in range(50)]


def test_model_round_trips_as_canonical_data() -> None:
    from gossipmind.core import encoding

    body = MODEL.to_body()
    assert FaultModel.from_body(encoding.decode(encoding.encode(body))) == MODEL
    with pytest.raises(SchemaError):
        FaultModel.from_body({**body, "extra": 1})
    with pytest.raises(SchemaError):
        FaultModel.from_body({**body, "failure_bp": {"timeout": 20_000}})
