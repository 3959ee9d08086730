"""The hold of a steady stream of reports (learn/hold.py) and the batcher that uses
it: a pattern's first reports are written at the end of their window, a steady
stream after holds that double up to ``max_ms``, and nothing is lost."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmind.core.errors import ConfigError
from gossipmind.core.schema import check_body
from gossipmind.learn.batcher import ReportBatcher
from gossipmind.learn.hold import Hold
from gossipmind.learn.patterns import Failure, Reduced, reduce

P, Q = b"\x01" * 32, b"\x02" * 32


def _reduced(msg: str = "Read timed out") -> Reduced:
    return reduce(Failure("payments", "charge", "httpx.ReadTimeout", msg))


def _writes(hold: Hold, key: bytes, until_ms: int, every_ms: int, flush_ms: int) -> list[int]:
    """When a stream reported every ``every_ms`` is written, with a flush every
    ``flush_ms`` (a window)."""
    out, first = [], None
    for now in range(1, until_ms + 1):
        if now % every_ms == 0 and first is None:
            first = now  # the earliest report not written yet
        if now % flush_ms == 0 and first is not None and hold.due(key, now):
            hold.written(key, now, first)
            out.append(now)
            first = None
    return out


def test_a_dense_stream_is_written_after_doubling_holds_then_once_per_max() -> None:
    hold = Hold(2_000, 60_000)
    writes = _writes(hold, P, 600_000, 500, 2_000)
    assert writes[:8] == [2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 124_000, 184_000]
    assert len(writes) == 14  # 300 without a hold
    assert hold.held_until(P) == writes[-1] + 60_000


def test_a_sparse_stream_is_soon_written_once_per_max() -> None:
    # a report every 200 s: each its own op without a hold, and with one until
    # the stream is older than the gap; then one op per max (10 min)
    writes = _writes(Hold(2_000, 600_000), P, 7_200_000, 200_000, 2_000)
    gaps = [b - a for a, b in itertools.pairwise(writes)]
    assert gaps[:3] == [200_000, 200_000, 400_000]
    assert all(g == 600_000 for g in gaps[4:]) and len(writes) == 14  # 36 reports


def test_at_least_half_of_a_stream_is_always_written() -> None:
    for every in (300, 7_000, 45_000):
        writes = _writes(Hold(1_000, 120_000), P, 1_000_000, every, 1_000)
        for a, b in itertools.pairwise(writes):
            assert b - a <= max(a - writes[0] + every + 1_000, 1_000), (every, a, b)
            assert b - a <= 120_000 + every


def test_a_key_that_falls_quiet_starts_over_and_others_are_independent() -> None:
    hold = Hold(1_000, 8_000)
    for now in (1_000, 2_000, 4_000, 8_000):
        assert hold.due(P, now)
        hold.written(P, now, now - 500 if now == 1_000 else now)
    assert hold.held_until(P) == 15_500  # the stream is 7.5 s old: held 7.5 s
    assert not hold.due(P, 15_499) and hold.due(P, 15_500)
    assert hold.due(Q, 9_000)  # another key is quiet: written at once
    hold.written(P, 30_000, 29_500)  # no report for 21.5 s after its write (> max)
    assert hold.held_until(P) == 31_000  # a new stream: held one window
    assert hold.forget_quiet(40_000) == 1 and hold.due(P, 40_000) and len(hold) == 0


def test_no_hold_when_max_is_not_above_the_window() -> None:
    for max_ms in (0, 2_000):
        hold = Hold(2_000, max_ms)
        assert not hold.enabled
        assert _writes(hold, P, 20_000, 500, 2_000) == list(range(2_000, 20_001, 2_000))
        assert len(hold) == 0


def test_a_clock_stepping_back_writes_and_memory_is_bounded() -> None:
    hold = Hold(1_000, 60_000, max_keys=3)
    hold.written(P, 10_000, 9_000)
    hold.written(P, 12_000, 11_000)
    assert not hold.due(P, 13_000)
    assert hold.due(P, 5_000)  # the clock stepped back: never held for good
    for i in range(5):
        hold.written(bytes([i]) * 32, 12_000 + i, 12_000)
    assert len(hold) == 3  # the oldest are forgotten: an op sooner, nothing lost
    assert hold.due(P, 12_100)


def test_bad_arguments_are_a_config_error() -> None:
    for args in ((0, 10), (10, -1)):
        with pytest.raises(ConfigError):
            Hold(*args)
    with pytest.raises(ConfigError):
        Hold(10, 10, max_keys=0)


def test_the_batcher_keeps_held_patterns_and_writes_them_with_force() -> None:
    b = ReportBatcher(window_ms=1_000, hold=Hold(1_000, 10_000))
    r = _reduced()
    b.add(r, 500)
    assert [x["count"] for x in b.flush(1_000)] == [1]  # first of a quiet period: now
    b.add(r, 1_500)
    assert [x["count"] for x in b.flush(2_000)] == [1]  # held 1 s: due
    for t in (2_100, 2_600, 3_100):
        b.add(r, t)
    assert b.flush(3_200) == [] and b.held(3_200) == 1 and b.opened_ms == 3_200  # held 2 s
    (body,) = b.flush(4_000)
    assert body["count"] == 3 and body["window"] == [2_000, 4_000]
    check_body("pattern.report", body)
    b.add(r, 4_500)
    assert b.flush(5_000) == []
    other = _reduced("connection reset by peer")
    b.add(other, 5_100)  # a new pattern is not held by another's stream
    (new,) = b.flush(6_000)
    assert new["pattern"] == other.pattern and b.held(6_000) == 1
    (forced,) = b.flush(6_100, force=True)
    assert forced["count"] == 1 and len(b) == 0 and b.opened_ms is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5_000)), min_size=1, max_size=200),
    st.integers(1, 5_000),
    st.integers(0, 60_000),
)
def test_every_failure_is_in_exactly_one_body(
    steps: list[tuple[int, int]], window: int, max_ms: int
) -> None:
    b = ReportBatcher(window_ms=window, hold=Hold(window, max_ms))
    patterns = [_reduced(f"failure kind {k}") for k in "abcd"]
    now, counted, added = 0, 0, 0
    for which, dt in steps:
        now += dt
        b.add(patterns[which], now)
        added += 1
        if dt > window // 2:
            counted += sum(x["count"] for x in b.flush(now))
    counted += sum(x["count"] for x in b.flush(now + 1, force=True))
    assert counted == added and len(b) == 0
