"""A clean stop writes what the agent was told was accepted: failures answered 202
and outcomes still in the report window are in the store after SIGTERM (real
process, real HTTP API, real SQLite)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from gossipmind.api.client import Client
from gossipmind.store.sqlite import Store
from gossipmind.testnet.setup import prepare


def test_reports_accepted_just_before_sigterm_are_written(tmp_path: Path) -> None:
    spec = prepare(tmp_path, 1, 0)[0]
    (spec.dir / "node.toml").write_text("report_window_ms = 600000\n")  # never due by itself
    cmd = [sys.executable, "-c", "from gossipmind.cli.main import main; main()"]
    cmd += ["--data-dir", str(spec.dir), "node", "--api-port", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["event"] == "ready", ready
            token = (spec.dir / "api.token").read_text().strip()
            client = Client(url=ready["api"], token=token, stream=False, timeout=5)
            for i in range(5):
                client.report_failure(
                    service="durab", operation="charge", exc_type="TimeoutError",
                    message=f"timed out after {i} ms",
                )  # fmt: skip
            assert client.stats.reports_queued == 0  # all five were accepted (202)
            client.close()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    with Store.open(spec.dir / "kb.sqlite3") as store:
        reports = [m for m in store.replica.meta.values() if m.kind == "pattern.report"]
        assert len(reports) == 1  # one window, one pattern
        patterns = list(store.replica.fold.patterns.values())
        assert [p.count for p in patterns if p.service == "durab"] == [5]


def test_a_store_of_another_network_than_the_data_dir_s_genesis_is_refused(
    tmp_path: Path,
) -> None:
    """A backup restored into the wrong data dir: its kb.sqlite3 and genesis.json
    disagree. The node used to start on the store's network without a word."""
    mine = prepare(tmp_path / "a", 1, 0)[0].dir
    other = prepare(tmp_path / "b", 1, 0)[0].dir
    (mine / "genesis.json").write_bytes((other / "genesis.json").read_bytes())
    before = (mine / "kb.sqlite3").read_bytes()
    cmd = [sys.executable, "-c", "from gossipmind.cli.main import main; main()"]
    out = subprocess.run(
        [*cmd, "--data-dir", str(mine), "node", "--no-api"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 4, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "belongs to network" in last and str(mine / "genesis.json") in last
    assert (mine / "kb.sqlite3").read_bytes() == before
