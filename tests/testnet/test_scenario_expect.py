"""The one line `testnet scenario` and `demo` print (and exit 1 with) when a run misses
its scenario's `expect`."""

from __future__ import annotations

from gossipmind.testnet.report import unmet


def test_the_unmet_expectation_is_one_line_naming_the_fixes() -> None:
    """expect = "fix" with only a fix stuck at proposed (flaky-payments on a `testnet up`
    network): the line names it with its status and risk; a met expectation: None."""
    stuck = {"fix": "3a0c1234" + "0" * 56, "status": "proposed", "risk": "medium"}
    base = {"scenario": "flaky-payments", "expect": "fix", "accepted_fixes": [], "fixes": [stuck]}
    line = unmet(base)
    assert line is not None and "\n" not in line
    assert line.startswith('flaky-payments: expect = "fix", but no fix for its pattern')
    assert "3a0c1234 proposed (risk medium)" in line
    assert "none proposed" in (unmet({**base, "fixes": []}) or "")
    assert unmet({**base, "accepted_fixes": [stuck["fix"]]}) is None
    assert unmet({**base, "expect": "no_fix"}) is None
