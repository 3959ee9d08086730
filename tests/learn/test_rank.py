"""Ranking by outcome evidence: the integer Wilson bound and the order of fixes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipmind.learn.rank import rank, score_bp, wilson_lower_bound, wilson_lower_bound_bp


def test_known_values() -> None:
    assert wilson_lower_bound_bp(0, 0) == 0
    assert wilson_lower_bound_bp(0, 10) == 0
    assert wilson_lower_bound_bp(10, 10) == 7224  # 0.72246 (10/10 at 95 %)
    assert wilson_lower_bound_bp(81, 100) == 7222  # 0.72221
    assert wilson_lower_bound_bp(8000, 10_000) == 7920  # 0.79205
    with pytest.raises(ValueError):
        wilson_lower_bound_bp(3, 2)


@given(st.integers(1, 10**6).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_integer_bound_matches_the_float_formula(sn: tuple[int, int]) -> None:
    s, n = sn
    exact = wilson_lower_bound(s, n) * 10_000
    got = wilson_lower_bound_bp(s, n)
    assert exact - 1.001 <= got <= exact + 1e-6
    assert 0 <= got <= s * 10_000 // n


@given(st.integers(0, 500), st.integers(1, 500))
def test_more_evidence_of_the_same_rate_ranks_higher(s: int, extra: int) -> None:
    n = s + extra
    assert wilson_lower_bound_bp(2 * s, 2 * n) >= wilson_lower_bound_bp(s, n)
    assert wilson_lower_bound_bp(s + 1, n + 1) >= wilson_lower_bound_bp(s, n)


def test_rank_orders_by_evidence_then_drill_then_id() -> None:
    verified = {"verdict": "accept", "tier": 1, "evidence": {"drill_success_bp": 9000}}
    fixes = [
        {"fix": b"\x03", "attempts": 10, "successes": 10},  # 100 % of 10
        {"fix": b"\x01", "attempts": 1000, "successes": 950},  # 95 % of 1000
        {"fix": b"\x02", "attempts": 0, "successes": 0, "attestations": [verified]},
        {"fix": b"\x04", "attempts": 0, "successes": 0},
        {"fix": b"\x00", "attempts": 0, "successes": 0},
    ]
    order = [f["fix"] for f in rank(fixes)]
    assert order == [b"\x01", b"\x03", b"\x02", b"\x00", b"\x04"]
    assert score_bp(fixes[1]) > score_bp(fixes[0]) > 0
    assert rank(list(reversed(fixes))) == rank(fixes)
