import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmind.core import encoding
from gossipmind.core.errors import ConfigError
from gossipmind.core.schema import MAX_COUNTER, check_body
from gossipmind.learn.batcher import MAX_STATUS_CODES, ReportBatcher
from gossipmind.learn.patterns import Failure, Reduced, reduce


def _reduced(msg: str = "Read timed out", **kw: object) -> Reduced:
    f = Failure(
        service=str(kw.pop("service", "payments")),
        operation="charge",
        exc_type="httpx.ReadTimeout",
        message=msg,
        status=kw.pop("status", None),  # type: ignore[arg-type]
        context={"amount": 1},
        latency_ms=kw.pop("latency_ms", None),  # type: ignore[arg-type]
        retry_after_ms=kw.pop("retry_after_ms", None),  # type: ignore[arg-type]
    )
    return reduce(f)


def test_one_body_per_pattern_with_stats_matching_the_schema() -> None:
    b = ReportBatcher()
    b.add(_reduced(status=504, latency_ms=100), now_ms=1_000)
    b.add(_reduced(status=504, latency_ms=300, retry_after_ms=2_000), now_ms=1_500)
    b.add(_reduced(status=408), now_ms=2_000)
    b.add(_reduced("Connect timed out", latency_ms=7), now_ms=2_500)
    assert len(b) == 2
    bodies = b.flush(now_ms=60_000)
    assert len(bodies) == 2
    for body in bodies:
        check_body("pattern.report", body)
    read = next(x for x in bodies if x["template"].startswith("ReadTimeout: Read"))
    assert read["count"] == 3
    assert read["window"] == [1_000, 60_000]
    assert read["stats"] == {
        "latency_ms_sum": 400,
        "latency_n": 2,
        "retry_after_ms_max": 2_000,
        "retry_after_n": 1,
        "status": {"408": 1, "504": 2},
    }
    assert read["error_class"] == "timeout"
    assert read["shape"] == "{amount:int}"
    connect = next(x for x in bodies if x is not read)
    assert connect["count"] == 1 and connect["window"] == [2_000, 60_000]  # whole seconds
    assert connect["stats"]["status"] == {}
    # The status decides the class, and the class is part of the pattern.
    assert _reduced(status=502).pattern != _reduced(status=504).pattern
    # The flush opened a new, empty window.
    assert len(b) == 0 and b.flush(now_ms=70_000) == []


def test_a_window_is_shared_in_whole_seconds() -> None:
    """The start was the millisecond of the pattern's first failure (s9 privacy review:
    a provider's log could match it to one request)."""
    b = ReportBatcher()
    b.add(_reduced(), now_ms=1_700_000_123_457)
    b.add(_reduced(), now_ms=1_700_000_124_001)
    (body,) = b.flush(now_ms=1_700_000_125_999)
    assert body["window"] == [1_700_000_123_000, 1_700_000_126_000]
    check_body("pattern.report", body)


def test_flush_is_deterministic_and_sorted_by_pattern() -> None:
    def run(order: list[str]) -> list[bytes]:
        b = ReportBatcher()
        for i, m in enumerate(order):
            b.add(_reduced(m), now_ms=10)
            _ = i
        return [encoding.encode(x) for x in b.flush(now_ms=20)]

    msgs = [f"failure kind {k}" for k in "abcdefgh"]
    assert run(msgs) == run(list(reversed(msgs)))
    patterns = [x["pattern"] for x in ReportBatcher().flush(0)]
    assert patterns == sorted(patterns)


def test_window_due_and_clock_going_backwards() -> None:
    b = ReportBatcher(window_ms=1_000)
    assert not b.due(10_000)
    b.add(_reduced(), now_ms=5_000)
    assert b.opened_ms == 5_000
    assert not b.due(5_999)
    assert b.due(6_000)
    b.add(_reduced(), now_ms=4_000)  # caller's clock stepped back
    (body,) = b.flush(now_ms=3_000)
    assert body["window"] == [5_000, 5_000]
    check_body("pattern.report", body)
    assert b.opened_ms is None


def test_bounded_patterns_and_overflow_is_counted() -> None:
    b = ReportBatcher(max_patterns=3)
    accepted = [b.add(_reduced(f"kind {k}"), now_ms=1) for k in "abcde"]
    assert accepted == [True, True, True, False, False]
    assert b.add(_reduced("kind a"), now_ms=2)  # known patterns still count
    assert (len(b), b.overflow, b.total_overflow) == (3, 2, 2)
    bodies = b.flush(now_ms=3)
    assert sum(x["count"] for x in bodies) == 4
    assert b.overflow == 0 and b.total_overflow == 2


def test_counters_are_clamped_to_the_schema() -> None:
    b = ReportBatcher()
    r = _reduced(latency_ms=2**31 - 1, retry_after_ms=2**31 - 1, status=500)
    b.add(r, now_ms=0)
    acc = b._acc[r.pattern]
    acc.count = MAX_COUNTER - 1
    acc.latency_sum = 2**53 - 5
    acc.latency_n = MAX_COUNTER - 1
    acc.retry_after_n = MAX_COUNTER - 1
    for _ in range(3):
        b.add(r, now_ms=1)
    (body,) = b.flush(now_ms=2**60)
    check_body("pattern.report", body)
    assert body["count"] == MAX_COUNTER
    assert body["stats"]["latency_ms_sum"] == 2**53
    assert body["window"] == [0, 2**53]


def test_status_histogram_keeps_the_most_frequent_codes() -> None:
    b = ReportBatcher()
    codes = [c for c in range(500, 560) if c not in (504, 524)]  # all server_error
    for code in codes:
        for _ in range(1 + (code == 555) * 5):
            b.add(_reduced(status=code), now_ms=0)
    (body,) = b.flush(now_ms=1)
    check_body("pattern.report", body)
    hist = body["stats"]["status"]
    assert len(hist) == MAX_STATUS_CODES
    assert hist["555"] == 6
    assert "500" in hist and "559" not in hist  # ties broken by lowest code


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        ReportBatcher(window_ms=0)
    with pytest.raises(ConfigError):
        ReportBatcher(max_patterns=0)
    with pytest.raises(ConfigError):
        ReportBatcher().add(_reduced(), now_ms=1.5)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.none() | st.integers(100, 599),
            st.none() | st.integers(0, 10**6),
            st.none() | st.integers(0, 10**6),
            st.integers(-5, 10**14),
        ),
        max_size=30,
    ),
    st.integers(-5, 10**14),
)
def test_every_flush_validates(
    events: list[tuple[str, int | None, int | None, int | None, int]], flush_at: int
) -> None:
    b = ReportBatcher(max_patterns=2)
    for kind, status, lat, ra, t in events:
        b.add(_reduced(f"kind {kind}", status=status, latency_ms=lat, retry_after_ms=ra), now_ms=t)
    bodies = b.flush(now_ms=flush_at)
    for body in bodies:
        check_body("pattern.report", body)
        encoding.encode(body)
    assert sum(x["count"] for x in bodies) + b.total_overflow == len(events)
