"""Report ids across a node killed while hung and started again (a real node process).

The node records a report's id in the transaction that commits the op counting
it (store/receipts.py): a report committed before a crash and sent again after it
is not counted twice; one the node had not committed (killed while hung) is
counted when the SDK sends it again; the ids are in no op.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from livenode import until

from gossipmind.api.client import Client
from gossipmind.api.outbox import report_id
from gossipmind.api.transport import Http
from gossipmind.store.sqlite import Store
from gossipmind.testnet.setup import prepare

START_S = 60.0  # s a node may take to start on a loaded machine


class NodeProcess:
    def __init__(self, data_dir: Path) -> None:
        code = "import sys; from gossipmind.cli.main import main; sys.argv[0] = 'gossipmind'; "
        code += "main()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "--data-dir", str(data_dir), "node"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        assert ready["event"] == "ready", ready
        self.http = Http(ready["api"], (data_dir / "api.token").read_text().strip(), 10.0)

    def count(self, pattern: bytes) -> tuple[int, int]:
        """(committed, taken but not written yet) failures of ``pattern``."""
        status, doc = self.http.request("GET", f"/v1/failures/count?pattern={pattern.hex()}")
        assert status == 200, doc
        return int(doc["count"]), int(doc["local_unsent"])

    def kill(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            with_signal(self.proc, signal.SIGKILL)  # (a stopped process dies too)
            self.proc.wait(timeout=20)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def with_signal(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    os.kill(proc.pid, sig)


@pytest.fixture
def processes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for node in started:
        node.kill()


def test_reports_are_counted_once_across_a_hung_node_killed_and_restarted(
    tmp_path: Path, processes: list[NodeProcess]
) -> None:
    spec = prepare(tmp_path, 1, 0)[0]
    processes.append(first := NodeProcess(spec.dir))
    client = Client(spec.dir, stream=False, timeout=0.3)
    failure: dict[str, Any] = {"service": "crash", "operation": "q", "exc_type": "TimeoutError"}
    pattern = client.pattern_of(None, **failure).pattern
    committed = failure | {"message": "", "id": report_id()}
    try:
        assert first.http.request("POST", "/v1/failures", committed)[0] == 202
        until(lambda: first.count(pattern) == (1, 0), "the report's op to be committed")
        with_signal(first.proc, signal.SIGSTOP)  # hung: the kernel takes the request
        client.report_failure(None, **failure)  # no answer comes
        assert client.stats.reports_queued == 1 and client.stats.reports_sent == 0
        first.kill()  # killed while hung: it never read the report
        processes.append(second := NodeProcess(spec.dir))
        client._sender.wake(now=True)
        until(lambda: not client.outbox.items, "the SDK to send the report again")
        assert client.stats.reports_resent >= 1 and client.stats.reports_unconfirmed == 0
        # the report committed before the crash, sent again after it: not counted again
        status, doc = second.http.request("POST", "/v1/failures", committed)
        assert status == 202 and doc["pattern"] == pattern.hex()
        until(lambda: second.count(pattern)[1] == 0, "the re-sent report to be committed")
        assert second.count(pattern) == (2, 0)
    finally:
        client.close()
    with_signal(second.proc, signal.SIGTERM)
    assert second.proc.wait(timeout=20) == 0
    with Store.open(spec.dir / "kb.sqlite3") as store:  # the ids are the node's alone
        raws = [bytes(r) for (r,) in store.conn.execute("SELECT raw FROM ops")]
        rid = str(committed["id"])
        assert raws and not [r for r in raws if bytes.fromhex(rid) in r or rid.encode() in r]
        assert store.knows_report(bytes.fromhex(rid))
