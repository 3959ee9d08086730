"""core.saying.Bounded: warnings others can trigger, at most a burst per window."""

from __future__ import annotations

import logging

import pytest

from gossipmind.core.saying import Bounded

log = logging.getLogger("gossipmind.test.saying")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = [r.getMessage() for r in caplog.records if r.name == log.name]
    caplog.clear()
    return out


def test_at_most_a_burst_in_any_window_and_the_next_line_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=log.name)
    said = Bounded(log, burst=3, window=10.0, unsaid="{} more not said")
    results = [said.warning(t * 0.5, "event %d", t) for t in range(10)]  # t = 0 .. 4.5 s
    assert results == [True] * 3 + [False] * 7
    assert lines(caplog) == ["event 0", "event 1", "event 2"]
    assert said.unsaid == 7
    assert not said.warning(9.9, "event x")  # the first line is 9.9 s old: still in
    assert said.warning(10.0, "event y")  # 10 s old: out of the window
    assert lines(caplog) == ["event y (8 more not said)"]
    assert said.unsaid == 0
    assert said.warning(10.5, "event z")  # line 1 (0.5 s) is out now as well
    assert lines(caplog) == ["event z"]


def test_a_steady_trickle_under_the_rate_is_all_said(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=log.name)
    said = Bounded(log, burst=5, window=60.0, unsaid="{} more")
    assert all(said.warning(t * 12.0, "tick %d", t) for t in range(100))
    assert len(lines(caplog)) == 100
