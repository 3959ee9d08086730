"""`gossipmind testnet …` end to end: each command is its own CLI process, like a user's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tnkit import same_process_runs

from gossipmind.node import build
from gossipmind.testnet import Testnet

GOSSIPMIND = Path(sys.executable).with_name("gossipmind")


def gm(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GOSSIPMIND), "testnet", *args, "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def status(run_dir: Path) -> dict[str, dict[str, Any]]:
    out = gm(run_dir, "status", "--json")
    assert out.returncode == 0, out.stderr
    return {r["name"]: r for r in json.loads(out.stdout)}


def one_line_error(out: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert words in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.slow
def test_up_status_partition_kill_restart_down_from_separate_invocations(run_dir: Path) -> None:
    up = gm(run_dir, "up", "-n", "4", "-v", "1", "-k", "2", "--status-every", "0.5", "--json")
    assert up.returncode == 0, up.stderr
    rows = {r["name"]: r for r in json.loads(up.stdout)}
    assert [r["state"] for r in rows.values()] == ["running"] * 4
    assert all(r["converged"] and r["peers"] >= 1 for r in rows.values())
    assert [r["role"] for r in rows.values()] == ["admin", "verifier", "member", "member"]
    assert rows["node-0"]["pid"] == rows["node-1"]["pid"] != rows["node-2"]["pid"]
    assert {r["commit"] for r in rows.values()} == {build.COMMIT}  # what each node runs
    assert "builds run" not in up.stderr
    first_pids = {r["pid"] for r in rows.values()}

    one_line_error(gm(run_dir, "up"), 4, "already runs a testnet")
    one_line_error(gm(run_dir, "kill", "node-9"), 3, "no node 'node-9'")
    one_line_error(gm(run_dir, "partition", "0,1", "1,2"), 4, "node-1 is in two partition groups")

    part = gm(run_dir, "partition", "0,1", "2,3")
    assert part.returncode == 0, part.stderr
    peer = {n: r["addr"].rsplit("/p2p/", 1)[1] for n, r in rows.items()}
    control = json.loads((run_dir / "node-0" / "control.json").read_text())
    assert sorted(control["block"]) == sorted([peer["node-2"], peer["node-3"]])
    assert status(run_dir)["node-3"]["group"] == 1
    assert gm(run_dir, "heal").returncode == 0
    assert json.loads((run_dir / "node-0" / "control.json").read_text()) == {"block": []}

    kill = gm(run_dir, "kill", "1")
    assert kill.returncode == 0, kill.stderr
    assert "also hosts node-0" in kill.stdout
    st = status(run_dir)
    assert st["node-0"]["state"] == st["node-1"]["state"] == "killed"
    assert st["node-2"]["state"] == "running"
    assert st["node-0"]["ops"] is not None, "a stopped node's store is still read"
    one_line_error(gm(run_dir, "kill", "node-0"), 4, "node-0 is not running")

    restart = gm(run_dir, "restart", "node-1")
    assert restart.returncode == 0, restart.stderr
    st = status(run_dir)
    assert all(r["state"] == "running" for r in st.values())
    assert st["node-0"]["pid"] == st["node-1"]["pid"] not in first_pids

    stop = gm(run_dir, "stop", "node-2")
    assert stop.returncode == 0 and "also hosts node-3" in stop.stdout, stop.stderr
    assert status(run_dir)["node-3"]["state"] == "stopped"
    start = gm(run_dir, "start", "3")
    assert start.returncode == 0, start.stderr
    assert status(run_dir)["node-2"]["state"] == "running"

    pids = dict(Testnet(run_dir).state().procs.items())
    down = gm(run_dir, "down", "--json")
    assert down.returncode == 0, down.stderr
    assert sorted(r["how"] for r in json.loads(down.stdout)) == ["stopped", "stopped"]
    assert not [p.pid for p in pids.values() if p.pid and same_process_runs(p.pid, p.starttime)]
    st = status(run_dir)
    assert all(r["state"] == "stopped" and r["ops"] is not None for r in st.values())
    assert gm(run_dir, "down", "--purge").returncode == 0
    assert not run_dir.exists()


def test_errors_are_one_line(tmp_path: Path) -> None:
    one_line_error(gm(tmp_path / "none", "status"), 4, "no testnet in")
    one_line_error(gm(tmp_path / "none", "down"), 4, "no testnet in")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "something").write_text("x")
    one_line_error(gm(tmp_path / "busy", "up", "-n", "2"), 4, "not empty")
    bad = gm(tmp_path / "x", "up", "-n", "2", "-v", "2")
    assert bad.returncode == 2 and "--verifiers" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_every_command_has_help() -> None:
    for cmd in ("up", "status", "down", "kill", "stop", "restart", "start", "partition", "heal"):
        out = subprocess.run(
            [str(GOSSIPMIND), "testnet", cmd, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        doc = out.stdout.split("Options:")[0]
        assert len(doc.strip().splitlines()) >= 3, f"{cmd} has no help text"


def test_the_help_says_where_the_default_run_dir_is_and_what_timeout_up_waits(
    tmp_path: Path,
) -> None:
    """The default run dir is relative to the current directory, which neither the
    help nor the README said; nor did they give --timeout's default (computed)."""
    from click.testing import CliRunner

    from gossipmind.cli.main import cli
    from gossipmind.testnet.launching import _startup_timeout

    def help_of(*cmd: str) -> str:
        out = CliRunner().invoke(cli, ["testnet", *cmd, "--help"], env={"COLUMNS": "200"})
        assert out.exit_code == 0, out.output
        return " ".join(out.output.split())

    assert "relative to the current directory" in help_of("status")
    assert "[default: 45 + 2 per process]" in help_of("up")
    assert _startup_timeout(1) == 47 and _startup_timeout(3) == 45 + 2 * 3
    for cmd in ("start", "restart"):  # one process
        assert "Seconds to wait for ready [default: 47]." in help_of(cmd, "node-1")
    # and it is: from another directory, the default names that directory's testnet/.run
    out = subprocess.run(
        [str(GOSSIPMIND), "testnet", "status"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "GOSSIPMIND_TESTNET_DIR"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0 and str(tmp_path / "testnet" / ".run") in out.stderr
    assert not (tmp_path / "testnet").exists()
