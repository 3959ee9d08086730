"""docs/sdk.md: the classic example needs a network where payments fixes are low risk,
and the doc shows how to create one; its commands make exactly the policy the doc test
(tests/api/test_docs.py) runs the example under."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from gossipmind.cli.main import cli
from gossipmind.core.policy import Policy

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"


def commands() -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## The classic example", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    assert blocks, "the classic example shows how to get a network it succeeds on"
    return [shlex.split(line.split("  #", 1)[0]) for b in blocks for line in b.splitlines()]


def test_sdk_doc_says_the_example_needs_an_accepted_fix_and_which_policy() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "only once the node's cache holds an **accepted**" in text
    assert "Under the default policy `payments` is `medium` risk" in text


def test_sdk_doc_policy_commands_create_a_network_with_payments_low_risk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "admin")]
    assert runner.invoke(cli, [*data, "init"]).exit_code == 0
    cmds = commands()
    echo = next(c for c in cmds if c[0] == "echo")
    assert echo[2] == ">"
    Path(echo[3]).write_text(echo[1] + "\n", encoding="utf-8")  # what the shell does
    create = next(c for c in cmds if c[:3] == ["gossipmind", "network", "create"])
    result = runner.invoke(cli, [*data, *create[1:]])
    assert result.exit_code == 0, result.output
    status = runner.invoke(cli, [*data, "status", "--json"])
    policy = json.loads(status.output)["policy"]
    assert "payments" not in policy["scope_risk"]
    assert Policy.from_body(policy) == Policy(scope_risk={})  # tests/api/test_docs.py's policy
