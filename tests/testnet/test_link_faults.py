"""A lossy/slow link shows in `testnet status`, and `testnet heal` clears it.

A review found that a chaos run that ended early left ``"drop": 0.47`` in a
node's control.json: `heal` rewrote only the block list, a restart re-read the
file, and neither `status` nor any command showed or cleared it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tnkit import stopped_testnet

from gossipmind.cli.main import cli
from gossipmind.core.errors import NotFound
from gossipmind.testnet import Testnet

GOSSIPMIND = Path(sys.executable).with_name("gossipmind")


def logged(tn: Testnet, name: str, words: str, timeout: float = 30.0) -> None:
    """Wait until the node's process has logged ``words`` (its JSON logs: the rotated
    log file the launcher gives it)."""
    st = tn.state()
    proc = st.proc_of(st.node(name))
    assert proc is not None and proc.log, "the launcher gives each process a log file"
    log = Path(proc.log)
    deadline = time.monotonic() + timeout
    while not log.exists() or words not in log.read_text():
        assert time.monotonic() < deadline, f"{name} did not log {words!r} in {timeout} s"
        time.sleep(0.1)


def rows(run_dir: Path) -> dict[str, dict[str, Any]]:
    out = CliRunner().invoke(cli, ["testnet", "status", "--json", "--run-dir", str(run_dir)])
    assert out.exit_code == 0, out.output
    return {r["name"]: r for r in json.loads(out.stdout)}


def test_status_shows_a_lossy_link_and_heal_clears_it_on_the_running_node(run_dir: Path) -> None:
    tn = Testnet(run_dir)
    tn.up(2, 1)
    tn.link_faults(["node-1"], 0.47, 0.04)
    logged(tn, "node-1", "link faults: (0.47, 0.04)")
    shown = rows(run_dir)
    assert shown["node-1"]["link_faults"] == {"drop": 0.47, "delay_s": 0.04}, shown["node-1"]
    assert shown["node-0"]["link_faults"] is None
    table = CliRunner().invoke(
        cli, ["testnet", "status", "--run-dir", str(run_dir)], env={"COLUMNS": "200"}
    )
    assert "drop 0.47 ≤0.04s" in table.stdout, table.stdout

    healed = CliRunner().invoke(cli, ["testnet", "heal", "--run-dir", str(run_dir)])
    assert healed.exit_code == 0, healed.output
    control = json.loads((Path(tn.node("node-1").dir) / "control.json").read_text())
    assert control == {"block": []}
    logged(tn, "node-1", "link faults: none")
    assert all(r["link_faults"] is None for r in rows(run_dir).values())


def test_link_faults_on_an_unknown_node_change_no_node(tmp_path: Path) -> None:
    tn = stopped_testnet(tmp_path)
    with pytest.raises(NotFound, match="node-9"):
        tn.link_faults(["node-0", "node-9"], 0.3, 0.1)
    assert not (Path(tn.node("node-0").dir) / "control.json").exists()
