"""One member's reports cannot set the statistics a pattern's fix is made and judged on.

The fleet's latency average and largest Retry-After are sums and maxima over
every author: one report with a huge Retry-After starved a 429 pattern (no
fix could beat its drill's baseline), one with a huge latency sum stretched a
timeout fix's per-attempt limit to its 30 s cap. Synthesis and drills now use
medians over the reporters (``latency_ms_typical``, ``retry_after_ms_typical``).
"""

from __future__ import annotations

from typing import Any

from gossipmind.core.policy import Policy
from gossipmind.core.recipe import steps_by_type
from gossipmind.core.schema import fix_id
from gossipmind.core.snapshot import pattern_rows
from gossipmind.learn.synth import synthesize
from gossipmind.testing.kb import KB, sample_report
from gossipmind.verify.checks import check_fix

HONEST = ("a", "b", "c")


def fleet(error_class: str, hostile: dict[str, Any], **honest: Any) -> dict[str, Any]:
    kb = KB(seed=3)
    for name in (*HONEST, "mallory"):
        kb.grant("admin", name, "member")
        kb.sync("admin", name)
    template = f"{error_class} failure"
    for name in HONEST:
        kb.report(name, error_class=error_class, template=template, count=20, **honest)
    kb.report("mallory", error_class=error_class, template=template, count=1, **hostile)
    for name in (*HONEST, "mallory"):
        kb.sync(name, "admin")
    (row,) = pattern_rows(kb.replica("admin"))
    return row


def verdict(row: dict[str, Any]) -> tuple[bool, dict[str, Any], list[str]]:
    (cand,) = synthesize(row, Policy()).candidates
    fix = {"fix": fix_id(row["pattern"], cand.recipe), "recipe": cand.recipe, "violations": []}
    v = check_fix(fix, row, Policy())
    return v.accept, cand.recipe, v.reasons


def test_one_huge_retry_after_does_not_starve_a_rate_limited_pattern() -> None:
    row = fleet(
        "rate_limited",
        {"retry_after_ms": 2**31, "status": "429"},
        retry_after_ms=1000,
        status="429",
    )
    assert row["retry_after_ms_max"] == 2**31  # the fold's maximum, as protocol.md §6.4 says
    assert row["retry_after_ms_typical"] == 1000
    accepted, recipe, reasons = verdict(row)
    assert accepted, reasons
    assert steps_by_type(recipe)["respect_retry_after"]["max_wait_ms"] == 1500


def test_one_huge_latency_does_not_stretch_a_timeout_fix() -> None:
    row = fleet("timeout", {"latency_ms": 2**40}, latency_ms=2000)
    assert row["latency_ms_typical"] == 2000
    accepted, recipe, reasons = verdict(row)
    assert accepted, reasons
    assert steps_by_type(recipe)["timeout"]["ms"] == 2000


def test_one_report_cannot_make_the_network_reject_its_own_5xx_fix() -> None:
    # One honest agent saw Retry-After; mallory reports samples of a 0 ms one.
    # The rules (from the median, 0) made no respect_retry_after step, while the
    # check (from the maximum) required one: the pattern got no fix at all.
    kb = KB(seed=4)
    for name in (*HONEST, "mallory"):
        kb.grant("admin", name, "member")
        kb.sync("admin", name)
    kw = {"error_class": "server_error", "template": "upstream 503", "status": "503"}
    kb.report("a", count=20, retry_after_ms=3000, **kw)
    for name in ("b", "c"):
        kb.report(name, count=20, **kw)
    body = sample_report(count=1, **kw)
    body["stats"]["retry_after_n"] = 1  # samples, each of 0 ms
    kb.write("mallory", "pattern.report", body)
    for name in (*HONEST, "mallory"):
        kb.sync(name, "admin")
    (row,) = pattern_rows(kb.replica("admin"))
    assert (row["retry_after_ms_max"], row["retry_after_ms_typical"]) == (3000, 0)
    accepted, _, reasons = verdict(row)
    assert accepted, reasons
