"""Signals: the first SIGINT/SIGTERM stops the daemon cleanly; a second one
while it is stopping exits at once (a shutdown that hangs must not need
SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gossipmind.node.daemon import EXIT_SECOND_SIGNAL
from gossipmind.store.sqlite import Store
from gossipmind.testnet.setup import prepare

WORKER = Path(__file__).with_name("slow_stop_worker.py")


def test_a_second_signal_while_stopping_exits_at_once(tmp_path: Path) -> None:
    spec = prepare(tmp_path, 1, 0)[0]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, str(WORKER), str(spec.dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["event"] == "ready" and ready["stall"] == "slow"
            proc.send_signal(signal.SIGINT)
            time.sleep(1.0)
            assert proc.poll() is None  # stopping: the service holds it up
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == EXIT_SECOND_SIGNAL
            events = [json.loads(line) for line in proc.stdout.read().splitlines()]
            assert [e["event"] for e in events] == ["killed"]
            assert events[0]["signal"] == "SIGTERM" and events[0]["names"] == ["node-0"]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    with Store.open(spec.dir / "kb.sqlite3") as store:  # reopens like after a crash
        assert store.replica.root()
