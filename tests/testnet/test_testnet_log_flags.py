"""`gossipmind testnet up --log-max-bytes N --log-backups K`: every node process of the
testnet rotates its ``logs/<proc>.log`` at N bytes keeping K old files, also after
``testnet restart``; bad values exit 2 with a specific message and create nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gossipmind.testnet import Testnet

GOSSIPMIND = Path(sys.executable).with_name("gossipmind")
BOUND = 30.0  # s: the most any wait below may take
MAX_BYTES = 1024
BACKUPS = 2


def gm(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GOSSIPMIND), "testnet", *args, "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def rotation_of(cmd: list[str]) -> tuple[str, str]:
    return cmd[cmd.index("--log-max-bytes") + 1], cmd[cmd.index("--log-backups") + 1]


def rotate(run_dir: Path, proc: str, node: str) -> list[str]:
    """Make ``node`` (in process ``proc``) log until its log has rotated past its
    last backup; return the log files seen, checked at each step."""
    logs = run_dir / "logs"
    control = run_dir / node / "control.json"
    deadline = time.monotonic() + BOUND
    for i in range(300):  # each change of control.json logs a warning
        if ((logs / f"{proc}.log.{BACKUPS}").exists() and i > 20) or time.monotonic() >= deadline:
            break
        control.write_text("x" * (i % 7 + 1))
        time.sleep(0.25)
        files = sorted(p.name for p in logs.glob(f"{proc}.log*"))
        assert len(files) <= BACKUPS + 1, files
    control.write_text(json.dumps({"block": []}))
    return sorted(p.name for p in logs.glob(f"{proc}.log*"))


def check_sizes(run_dir: Path, proc: str) -> None:
    for p in (run_dir / "logs").glob(f"{proc}.log*"):
        assert p.stat().st_size <= MAX_BYTES, (p, p.stat().st_size)


@pytest.mark.slow
def test_up_log_flags_reach_every_process_and_survive_a_restart(run_dir: Path) -> None:
    up = gm(
        run_dir,
        "up",
        "--nodes",
        "2",
        "--verifiers",
        "0",
        "--status-every",
        "0.2",
        "--log-max-bytes",
        str(MAX_BYTES),
        "--log-backups",
        str(BACKUPS),
        "--json",
    )
    assert up.returncode == 0, up.stderr
    tn = Testnet(run_dir)
    st = tn.state()
    assert (st.log_max_bytes, st.log_backups) == (MAX_BYTES, BACKUPS)  # kept for restarts
    for proc in st.procs.values():  # every node process got them
        assert proc.pid is not None
        assert rotation_of(argv(proc.pid)) == (str(MAX_BYTES), str(BACKUPS))
    want = ["p0.log", "p0.log.1", "p0.log.2"]
    assert rotate(run_dir, "p0", "node-0") == want
    check_sizes(run_dir, "p0")

    old_pid = st.procs["p1"].pid
    restarted = gm(run_dir, "restart", "node-1")
    assert restarted.returncode == 0, restarted.stderr
    p1 = tn.state().procs["p1"]
    assert p1.pid is not None and p1.pid != old_pid
    assert rotation_of(argv(p1.pid)) == (str(MAX_BYTES), str(BACKUPS))
    assert rotate(run_dir, "p1", "node-1") == ["p1.log", "p1.log.1", "p1.log.2"]
    check_sizes(run_dir, "p1")
    down = gm(run_dir, "down")
    assert down.returncode == 0, down.stderr


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--log-max-bytes", "100", "must be 0 (no rotation) or at least 1024"),
        ("--log-max-bytes", "-1", "must be 0 (no rotation) or at least 1024"),
        ("--log-backups", "0", "must be 1 to 1000 (0 would never rotate)"),
        ("--log-backups", "1001", "must be 1 to 1000"),
        ("--log-max-bytes", "lots", "'lots' is not a valid integer"),
    ],
)
def test_up_refuses_bad_log_rotation_values_and_creates_nothing(
    tmp_path: Path, flag: str, value: str, words: str
) -> None:
    run = tmp_path / "run"
    out = gm(run, "up", "--nodes", "2", flag, value)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert flag in out.stderr and words in out.stderr, out.stderr
    assert not run.exists()


def test_up_help_names_the_log_rotation_defaults() -> None:
    from click.testing import CliRunner

    from gossipmind.cli.main import cli

    out = CliRunner().invoke(cli, ["testnet", "up", "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "--log-max-bytes" in out.output and "4194304" in out.output
    assert "--log-backups" in out.output
