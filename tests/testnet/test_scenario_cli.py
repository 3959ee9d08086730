"""`gossipmind testnet scenario` on a `testnet up` network, as the README's tour runs it.

Each command is its own CLI process, like a user's; every testnet lives under
tmp_path (the ``run_dir`` fixture stops it afterwards).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gossipmind.testnet.scenario import SCENARIO_DIR

GOSSIPMIND = Path(sys.executable).with_name("gossipmind")
README = Path(__file__).resolve().parents[2] / "README.md"


def gm(run_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GOSSIPMIND), "testnet", *args, "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tour() -> dict[str, list[str]]:
    """The `testnet up` and `testnet scenario` commands of the README's tour (arguments
    after ``gossipmind testnet``, comments dropped)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## A five-minute tour", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None
    found: dict[str, list[str]] = {}
    for line in block.group(1).splitlines():
        words = shlex.split(line.split("#", 1)[0])
        if words[:2] == ["gossipmind", "testnet"] and words[2] in ("up", "scenario"):
            found[words[2]] = words[2:]
    assert set(found) == {"up", "scenario"}, found
    return found


def up(run_dir: Path, args: list[str]) -> None:
    out = gm(run_dir, *args, "--json")
    assert out.returncode == 0, (out.stdout, out.stderr)


def scenario(run_dir: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = gm(run_dir, "scenario", *args, "--report", str(run_dir.parent / "report.html"))
    summary = json.loads((run_dir.parent / "report.json").read_text())
    return out, summary


@pytest.mark.slow
def test_the_readme_tour_scenario_learns_on_the_tour_testnet(run_dir: Path) -> None:
    """README: `testnet up --nodes 5 --verifiers 1`, then a scenario "agents fail, the
    network learns": on that testnet (default policy, tier-1 verifiers) its fix is
    accepted and the late agent recovers with it."""
    commands = tour()
    up(run_dir, commands["up"])
    out, s = scenario(run_dir, *commands["scenario"][1:])
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert s["expect"] == "fix" and s["accepted_fixes"], out.stdout
    assert s["learned_at_s"] is not None, out.stdout
    late = [a for a in s["agents"] if a["late"]]
    assert late and late[0]["recoveries"] >= 1, out.stdout
    assert "ACCEPTED" in out.stdout


@pytest.mark.slow
def test_a_scenario_after_another_reports_only_its_own_fixes(run_dir: Path) -> None:
    """An earlier scenario's accepted fix is neither news nor the next scenario's fix:
    schema-drift after rate-limited-search-api reports no proposal, no acceptance, and
    no accepted fix for its pattern."""
    up(run_dir, ["up", "--nodes", "5", "--verifiers", "1", "--per-process", "2"])
    first, s1 = scenario(run_dir, "rate-limited-search-api", "--short")
    assert first.returncode == 0, (first.stdout, first.stderr)
    assert len(s1["accepted_fixes"]) == 1, first.stdout
    earlier = s1["accepted_fixes"][0]

    second, s2 = scenario(run_dir, "schema-drift", "--short")
    assert second.returncode == 0, (second.stdout, second.stderr)
    assert s2["accepted_fixes"] == [], second.stdout
    assert s2["first"]["accepted"] is None and s2["first"]["proposed"] is None, second.stdout
    assert earlier[:8] not in second.stdout, second.stdout
    assert "ACCEPTED" not in second.stdout
    assert "accepted fixes for the pattern: 0 (expected none)" in second.stdout


@pytest.mark.slow
def test_scenario_exits_1_with_one_line_when_its_expect_is_not_met(
    run_dir: Path, tmp_path: Path
) -> None:
    """A scenario that expects no fix, whose fix the network does accept: exit 1 and one
    line on stderr naming the failed expectation (as `testnet attack`/`chaos` exit 1)."""
    doc = (SCENARIO_DIR / "rate-limited-search-api.toml").read_text(encoding="utf-8")
    wrong = tmp_path / "expects-no-fix.toml"
    wrong.write_text(
        doc.replace('name = "rate-limited-search-api"', 'name = "expects-no-fix"').replace(
            'expect = "fix"', 'expect = "no_fix"'
        ),
        encoding="utf-8",
    )
    up(run_dir, ["up", "--nodes", "4", "--verifiers", "1", "--per-process", "2"])
    out, s = scenario(run_dir, str(wrong), "--short")
    assert s["accepted_fixes"], out.stdout
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("expectation not met: expects-no-fix: "), out.stderr
    assert 'expect = "no_fix"' in lines[0] and s["accepted_fixes"][0][:8] in lines[0]


@pytest.mark.slow
def test_a_scenario_waits_for_its_fix_on_a_testnet_with_no_room_for_a_late_agent(
    run_dir: Path,
) -> None:
    """Three nodes, one a verifier: two hosts, so no late agent, and nothing waited
    for the fix the run then judged: it ended after ~2 s with "expectation not
    met" (exit 1), the fix accepted a moment later."""
    up(run_dir, ["up", "--nodes", "3", "--verifiers", "1"])
    out, s = scenario(run_dir, "rate-limited-search-api", "--short")
    assert not [a for a in s["agents"] if a["late"]], out.stdout
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    # ... and says so, in the timeline and under the summary table (it did not)
    assert s["agents_left_out"] == 1, s
    left_out = "1 of the scenario's 3 agents (1 late) left out: one per non-verifier node"
    assert " ".join(out.stdout.split()).count(left_out) == 2, out.stdout  # lines wrap
    assert s["accepted_fixes"] and s["learned_at_s"] is not None, out.stdout
