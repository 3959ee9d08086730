"""Error signals from untrusted servers: a Retry-After hint is read, bounded, or ignored."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest

from gossipmind.learn.breaker import retry_after_ms

MAX = 2**31 - 1  # the bound the node's API puts on retry_after_ms


class Upstream(Exception):
    """An HTTP client error carrying the server's ``Retry-After`` header."""

    def __init__(self, retry_after: Any) -> None:
        super().__init__("HTTP 503")
        self.response = type("R", (), {"status_code": 503, "headers": {"Retry-After": retry_after}})


@pytest.mark.parametrize(
    "raw", ["inf", "Infinity", "-inf", "1e999", "-1e999", "nan", "NaN", float("inf"), float("nan")]
)
def test_a_retry_after_that_is_not_a_finite_number_counts_as_absent(raw: Any) -> None:
    assert retry_after_ms(Upstream(raw)) is None
    exc = Exception("rate limited")
    exc.retry_after = raw  # type: ignore[attr-defined]
    assert retry_after_ms(exc) is None


def test_a_huge_retry_after_is_clamped() -> None:
    assert retry_after_ms(Upstream("1e300")) == MAX
    assert retry_after_ms(Upstream(1e300)) == MAX
    assert retry_after_ms(Upstream(10**400)) == MAX  # an int too big for a float
    assert retry_after_ms(Upstream("-5")) == 0
    exc = Exception("rate limited")
    exc.retry_after_ms = 10**20  # type: ignore[attr-defined]
    assert retry_after_ms(exc) == MAX
    far = format_datetime(datetime(9999, 12, 31, tzinfo=UTC), usegmt=True)
    assert retry_after_ms(Upstream(far), wall_now=lambda: 0.0) == MAX


def test_ordinary_retry_after_values_are_unchanged() -> None:
    assert retry_after_ms(Upstream("2")) == 2000
    assert retry_after_ms(Upstream(1.5)) == 1500
    assert retry_after_ms(Upstream(" 0.25 ")) == 250
    wall = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    date = format_datetime(datetime(2030, 1, 1, 0, 0, 4, tzinfo=UTC), usegmt=True)
    assert retry_after_ms(Upstream(date), wall_now=lambda: wall) == 4000
