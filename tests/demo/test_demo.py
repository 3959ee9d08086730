"""The main job: `gossipmind demo` (short mode) shows a fleet learning, on real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gossipmind.cli.main import cli
from gossipmind.testnet.scenario import SCENARIO_DIR


def run(tmp_path: Path, scenario: str) -> tuple[dict, str]:
    report = tmp_path / f"{Path(scenario).stem}.html"
    result = CliRunner().invoke(
        cli,
        [
            "demo",
            "--scenario",
            scenario,
            "--short",
            "--report",
            str(report),
            "--run-dir",
            str(tmp_path / "run"),
        ],
    )
    summary = json.loads(report.with_suffix(".json").read_text())
    return summary, result.output + (
        f"\nexit {result.exit_code}: {result.exception!r}" if result.exit_code else ""
    )


def assert_no_process_left(summary: dict, output: str) -> None:
    assert "left running: 0" in output, output
    for pid in summary.get("pids", []):
        assert not Path(f"/proc/{pid}").exists(), _proc_status(pid)


def _proc_status(pid: int) -> str:
    """What is at /proc/<pid> (a zombie, a live node, another process), for the message."""
    try:
        return Path(f"/proc/{pid}/status").read_text()[:600]
    except OSError as exc:
        return f"/proc/{pid}/status: {exc}"


def test_demo_learns_a_fix_and_cuts_the_fleet_error_rate(tmp_path: Path) -> None:
    s, out = run(tmp_path, "flaky-payments")
    assert s["accepted_fixes"], out
    assert s["converged"], out
    before, after = s["fleet_error_before"], s["fleet_error_after"]
    assert before > 0.1 and after is not None
    assert after <= 0.2 * before, (before, after, out)
    late = [a for a in s["agents"] if a["late"]]
    assert late and late[0]["recoveries"] >= 1  # recovered without ever reporting first
    assert s["first"]["recovery"] is not None
    html = (tmp_path / "flaky-payments.html").read_text()
    assert "<svg" in html and "Learning curve" in html
    assert_no_process_left(s, out)


@pytest.mark.parametrize("scenario", ["schema-drift", "poisoned-fix"])
def test_no_fix_is_learned_for_what_no_fix_can_help(tmp_path: Path, scenario: str) -> None:
    s, out = run(tmp_path, scenario)
    assert s["accepted_fixes"] == [], out
    assert s["converged"], out
    if scenario == "poisoned-fix":
        assert s["poison_fix"] and s["poison_status"] in ("rejected", "blocked"), out
    assert_no_process_left(s, out)


def test_unknown_scenario_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--scenario", str(tmp_path / "nope.toml")])
    assert result.exit_code == 4 and "no scenario at" in result.output


def test_demo_says_which_expectation_failed(tmp_path: Path) -> None:
    """A run that misses its scenario's `expect` exits 1 with one line saying so."""
    doc = (SCENARIO_DIR / "rate-limited-search-api.toml").read_text(encoding="utf-8")
    wrong = tmp_path / "expects-no-fix.toml"
    wrong.write_text(
        doc.replace('name = "rate-limited-search-api"', 'name = "expects-no-fix"').replace(
            'expect = "fix"', 'expect = "no_fix"'
        ),
        encoding="utf-8",
    )
    s, out = run(tmp_path, str(wrong))
    assert s["accepted_fixes"], out
    assert "exit 1:" in out, out
    failed = [line for line in out.splitlines() if line.startswith("expectation not met: ")]
    assert len(failed) == 1, out
    assert 'expect = "no_fix"' in failed[0] and s["accepted_fixes"][0][:8] in failed[0], out
    assert_no_process_left(s, out)
