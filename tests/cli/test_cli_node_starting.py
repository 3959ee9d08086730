"""A writing command run while a node starts: the node has taken the store's lock
but has not written ``api.json`` yet (it replays its store and starts its host
first). A review found that the command looked for the API once, before its
5 s wait for the lock, and then failed "held by another process that serves no
local API" although the node had served its API for most of that wait. It now
looks for the API throughout the wait and writes through the node once it is up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gossipmind.api.transport import Http
from gossipmind.testing.nodethread import NodeThread

BOUND = 30.0  # s: the most any wait below may take


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from gossipmind.cli.main import main; main()", *args]


def holds_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open now (Linux: /proc/<pid>/fd)."""
    target = os.path.realpath(path)
    try:
        entries = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for entry in entries:
        try:
            if os.readlink(entry) == target:
                return True
        except OSError:
            continue
    return False


def wait_for_the_wait(proc: subprocess.Popen[str], lock: Path) -> None:
    """Until ``proc`` is waiting for the store's lock: it has the lock file open
    at two looks 0.3 s apart (its first, non-waiting, try holds it a moment)."""
    deadline = time.monotonic() + BOUND
    first: float | None = None
    for _ in range(int(BOUND / 0.01) + 1):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        now = time.monotonic()
        if holds_open(proc.pid, lock):
            if first is None:
                first = now
            elif now - first >= 0.3:
                return
        time.sleep(0.01)
    raise AssertionError(f"the command never waited for the store (exit {proc.poll()})")


def outcomes(nt: NodeThread, api: Path) -> tuple[int, int]:
    url = json.loads(api.read_text())["url"]
    http = Http(url, (nt.dir / "api.token").read_text().strip(), timeout=10)
    try:
        status, rows = http.request("GET", f"/v1/fixes?pattern={nt.pattern.hex()}")
    finally:
        http.close()
    assert status == 200, rows
    row = next(r for r in rows if r["fix"] == nt.fix.hex())
    return int(row["attempts"]), int(row["successes"])


def test_a_command_waiting_for_the_store_writes_through_the_node_once_its_api_is_up(
    tmp_path: Path,
) -> None:
    if not Path(f"/proc/{os.getpid()}/fd").is_dir():
        pytest.skip("needs /proc to see the command wait")
    with NodeThread(tmp_path) as nt:
        api, later = nt.dir / "api.json", nt.dir / "api.json.later"
        before = outcomes(nt, api)
        api.rename(later)  # the node holds its store; its API is not announced yet
        try:
            args = ["--data-dir", str(nt.dir), "outcome", nt.fix.hex(), "--attempts", "3"]
            proc = subprocess.Popen(
                cli(*args, "--successes", "2", "--json"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                wait_for_the_wait(proc, nt.dir / "kb.sqlite3.lock")
                later.rename(api)  # the node's API is up
                out, err = proc.communicate(timeout=BOUND)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate(timeout=BOUND)
        finally:
            if later.exists():
                later.rename(api)
        assert proc.returncode == 0, err
        op = json.loads(out)["op"]
        assert len(bytes.fromhex(op)) == 32
        deadline = time.monotonic() + BOUND
        for _ in range(int(BOUND / 0.05) + 1):  # the node folds its own op at once
            if outcomes(nt, api) != before or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert outcomes(nt, api) == (before[0] + 3, before[1] + 2)
