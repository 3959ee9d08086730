"""`testnet attack --target` takes a node's index, as every other testnet command does.

A review found `attack replay --target 2` refused ("target 2 is not a running
node of this testnet", exit 4) on a testnet whose node-2 was running.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gossipmind.testnet import Testnet

GOSSIPMIND = Path(sys.executable).with_name("gossipmind")


def gm(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GOSSIPMIND), "testnet", *args, "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_attack_target_by_index_is_that_node(run_dir: Path) -> None:
    tn = Testnet(run_dir)
    tn.up(3, 1, settings={"sync_interval": 1.0})
    out = gm(run_dir, "attack", "replay", "--count", "4", "--target", "2", "--json")
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    assert json.loads(out.stdout)["target"] == "node-2"

    unknown = gm(run_dir, "attack", "replay", "--count", "4", "--target", "7")
    assert unknown.returncode == 3, (unknown.returncode, unknown.stderr)
    assert "no node '7' in this testnet" in unknown.stderr, unknown.stderr
    tn.stop("node-2")
    stopped = gm(run_dir, "attack", "replay", "--count", "4", "--target", "2")
    assert stopped.returncode == 4, (stopped.returncode, stopped.stderr)
    assert "target node-2 is not a running node" in stopped.stderr, stopped.stderr
