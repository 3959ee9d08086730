"""The interim demo walks the whole KB and every replica ends on one root."""

from __future__ import annotations

from click.testing import CliRunner

from gossipmind.cli.main import cli


def test_demo_runs_and_converges() -> None:
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == 0, result.output
    assert "one root on every node" in result.output
    assert result.output.count("accepted") >= 4
    assert "reproduced: identical" in result.output
    assert "example.com/v1/search?q=shoes&user=" in result.output  # the raw message stays local
    shared = [line for line in result.output.splitlines() if "shares only" in line]
    assert shared and all("@" not in line for line in shared)
