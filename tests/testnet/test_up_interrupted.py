"""`testnet up` interrupted while it prepares the data dirs leaves a run dir that
`down --purge` deletes.

A review found that a SIGTERM (or Ctrl-C, SIGHUP, a failure) during ``prepare``,
before the first state.json, left genesis.json and node-* dirs that no command
would touch: `down --purge` and `status` said "no testnet", `up` said "not empty
and holds no testnet".
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

GOSSIPMIND = Path(sys.executable).with_name("gossipmind")

# `up` whose prepare() completes, and then SIGTERM lands: at once, before `up` goes on
DRIVER = """
import os, signal, sys
from gossipmind.cli.main import main
from gossipmind.testnet import launcher
real = launcher.prepare
def interrupted(*a, **k):
    specs = real(*a, **k)
    os.kill(os.getpid(), signal.SIGTERM)
    return specs
launcher.prepare = interrupted
sys.argv = ["gossipmind", "testnet", "up", "-n", "3", "--spares", "2", "--run-dir", {run!r}]
main()
"""


def gm(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GOSSIPMIND), "testnet", *args, "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_up_interrupted_while_preparing_leaves_a_run_dir_down_purge_deletes(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    up = subprocess.run(
        [sys.executable, "-c", DRIVER.format(run=str(run))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert up.returncode == 128 + signal.SIGTERM, (up.returncode, up.stderr)
    assert "interrupted by SIGTERM" in up.stderr, up.stderr
    assert (run / "genesis.json").exists() and (run / "node-4").is_dir(), "prepare() ran"
    assert not (run / "logs").exists(), "no node was started"

    again = gm(run, "up", "-n", "3")
    assert again.returncode == 4, (again.returncode, again.stderr)
    assert "holds a stopped testnet: `gossipmind testnet down --purge` deletes it" in again.stderr
    status = gm(run, "status")
    assert status.returncode == 0, status.stderr
    assert "`testnet down --purge` deletes it" in status.stderr, status.stderr

    purge = gm(run, "down", "--purge")
    assert purge.returncode == 0, (purge.stdout, purge.stderr)
    assert not run.exists()
