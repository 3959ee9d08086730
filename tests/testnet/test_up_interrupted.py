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


# Ctrl-C (SIGINT) at a chosen moment of `up`/`start`: WHEN is "wait" (while the
# launcher waits for the nodes to be ready: the start fails) or "done" (just after
# the launcher's work succeeded, before the command printed its result)
SIGINT_DRIVER = """
import os, signal, sys
from gossipmind.cli.main import main
from gossipmind.testnet import launcher
T = launcher.Testnet
if {when!r} == "wait":
    real_wait = T._wait_ready
    def wait_ready(self, *a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        return real_wait(self, *a, **k)
    T._wait_ready = wait_ready
else:
    real_launch = T._launch
    def launch(self, *a, **k):
        lonely = real_launch(self, *a, **k)
        os.kill(os.getpid(), signal.SIGINT)
        return lonely
    T._launch = launch
    real_status = T.status
    def status(self):  # `up` reads the rows after its work: a SIGINT there too
        os.kill(os.getpid(), signal.SIGINT)
        return real_status(self)
    T.status = status
sys.argv = ["gossipmind", "testnet", *{args!r}, "--run-dir", {run!r}]
main()
"""


def interrupted(run: Path, when: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SIGINT_DRIVER.format(when=when, args=list(args), run=str(run))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def states(run_dir: Path) -> dict[str, str]:
    from gossipmind.testnet import Testnet

    return {r["name"]: r["state"] for r in Testnet(run_dir).status()}


def test_ctrl_c_during_up_says_it_stopped_the_nodes_and_exits_130(run_dir: Path) -> None:
    """The walkthrough: Ctrl-C during `up` printed only "Aborted!" (exit 1)."""
    up = interrupted(run_dir, "wait", "up", "-n", "2", "-v", "0")
    assert up.returncode == 128 + signal.SIGINT, (up.returncode, up.stderr)
    assert "error: interrupted by SIGINT: stopped the processes it had started" in up.stderr
    assert "Aborted!" not in up.stderr
    assert set(states(run_dir).values()) == {"stopped"}


def test_ctrl_c_once_up_has_succeeded_is_a_success_and_the_nodes_run(run_dir: Path) -> None:
    """The walkthrough's race: a SIGINT landing after `up` had done its work made it
    fail (exit 130, or "Aborted!" and 1) while the nodes kept running."""
    up = interrupted(run_dir, "done", "up", "-n", "2", "-v", "0")
    assert up.returncode == 0, (up.returncode, up.stderr)
    assert "join it: --genesis" in up.stdout
    assert "SIGINT came after the start had succeeded: ignored, it runs" in up.stderr
    assert states(run_dir) == {"node-0": "running", "node-1": "running"}


def test_ctrl_c_during_start_stops_the_process_and_after_it_changes_nothing(
    run_dir: Path,
) -> None:
    up = gm(run_dir, "up", "-n", "1", "-v", "0", "--spares", "1")
    assert up.returncode == 0, up.stderr
    early = interrupted(run_dir, "wait", "start", "node-1")
    assert early.returncode == 128 + signal.SIGINT, (early.returncode, early.stderr)
    assert "error: interrupted by SIGINT: stopped the process it had started" in early.stderr
    assert states(run_dir)["node-1"] != "running"

    late = interrupted(run_dir, "done", "start", "node-1")
    assert late.returncode == 0, (late.returncode, late.stderr)
    assert "started node-1" in late.stdout
    assert states(run_dir) == {"node-0": "running", "node-1": "running"}
