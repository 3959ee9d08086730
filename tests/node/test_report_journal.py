"""A report the node answered (202) is never lost: its journal row is committed
before the answer, so a node SIGKILLed inside its report window counts it after
a restart, exactly once, also when the SDK sends it again (real node processes,
real HTTP API, real SQLite files; store/journal.py, node/reporter.py)."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gossipmind.api.client import Client
from gossipmind.store.sqlite import Store
from gossipmind.testnet.setup import prepare

SECRET = "sk_live_" + "Q7vX2mR9tL4wZ8kP3nB6"  # an API key in a message
PASSWORD = "correct-horse-battery-staple-91"  # a value in a context


@contextmanager
def node(data: Path) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """A node process on ``data``; yields (process, API url, token); killed at the end."""
    cmd = [sys.executable, "-c", "from gossipmind.cli.main import main; main()"]
    cmd += ["--data-dir", str(data), "node", "--api-port", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["event"] == "ready", ready
            yield proc, ready["api"], (data / "api.token").read_text().strip()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def post(url: str, token: str, path: str, doc: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(
        url + path,
        data=json.dumps(doc).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=20) as resp:
        return resp.status, json.loads(resp.read())


def get(url: str, token: str, path: str) -> Any:
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=20) as resp:
        return json.loads(resp.read())


def failure(i: int, rid: bytes | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "service": "payments",
        "operation": "charge",
        "exc_type": "TimeoutError",
        "message": f"timed out after {i} ms calling with key {SECRET}",
        "context": {"password": PASSWORD, "attempt": i},
    }
    return {**doc, "id": rid.hex()} if rid is not None else doc


def counted(data: Path, service: str = "payments") -> list[int]:
    with Store.open(data / "kb.sqlite3") as store:
        return [p.count for p in store.replica.fold.patterns.values() if p.service == service]


def journal_rows(data: Path) -> int:
    with Store.open(data / "kb.sqlite3") as store:
        tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
        if "report_journal" not in tables:  # (a node without a journal)
            return 0
        (n,) = store.conn.execute("SELECT COUNT(*) FROM report_journal").fetchone()
        return int(n)


def test_reports_answered_then_sigkilled_are_counted_once_after_a_restart(
    tmp_path: Path,
) -> None:
    data = prepare(tmp_path, 1, 0)[0].dir
    (data / "node.toml").write_text("report_window_ms = 600000\n")  # never due by itself
    ids = [secrets.token_bytes(16) for _ in range(6)]
    with node(data) as (proc, url, token):
        for i, rid in enumerate(ids):
            status, answer = post(url, token, "/v1/failures", failure(i, rid))
            assert status == 202
        pattern = answer["pattern"]
        for i in range(4):  # without an id (curl, an older SDK): the node makes one up
            assert post(url, token, "/v1/failures", failure(10 + i))[0] == 202
        client = Client(url=url, token=token, stream=False, timeout=5)
        for i in range(3):  # the SDK's own, with its own ids
            doc = failure(20 + i)
            client.report_failure(
                service=doc["service"], operation=doc["operation"], exc_type=doc["exc_type"],
                message=doc["message"], context=doc["context"],
            )  # fmt: skip
        assert client.stats.reports_queued == 0  # all three were answered 202
        client.close()
        assert get(url, token, f"/v1/failures/count?pattern={pattern}")["local_unsent"] == 13
        proc.send_signal(signal.SIGKILL)  # inside the window: nothing was written in an op
        proc.wait(timeout=30)
    # no raw text of a report reached the disk (the journal holds the reduced report)
    for f in data.glob("kb.sqlite3*"):
        raw = f.read_bytes()
        assert SECRET.encode() not in raw and PASSWORD.encode() not in raw, f
    assert counted(data) == [] and journal_rows(data) == 13  # (a reader replays the -wal)
    with node(data) as (proc, url, token):
        assert get(url, token, f"/v1/failures/count?pattern={pattern}")["local_unsent"] == 13
        for i, rid in enumerate(ids[:3]):  # the SDK sends some again: taken already
            assert post(url, token, "/v1/failures", failure(i, rid))[0] == 202
        assert get(url, token, f"/v1/failures/count?pattern={pattern}")["local_unsent"] == 13
        assert get(url, token, "/v1/status")["reports"]["duplicates"] == 3
        proc.send_signal(signal.SIGTERM)  # writes the window: the op, and the rows go
        assert proc.wait(timeout=30) == 0
    assert counted(data) == [13] and journal_rows(data) == 0
    with node(data) as (proc, url, token):  # sent again after their op committed
        for i, rid in enumerate(ids):
            assert post(url, token, "/v1/failures", failure(i, rid))[0] == 202
        assert get(url, token, f"/v1/failures/count?pattern={pattern}")["local_unsent"] == 0
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert counted(data) == [13] and journal_rows(data) == 0


def test_a_burst_of_concurrent_reports_shares_journal_commits(tmp_path: Path) -> None:
    data = prepare(tmp_path, 1, 0)[0].dir
    (data / "node.toml").write_text("report_window_ms = 600000\n")
    n = 200
    with node(data) as (proc, url, token):
        before = get(url, token, "/v1/status")["reports"]["journal_commits"]
        u = urlsplit(url)
        conns = [http.client.HTTPConnection(u.hostname, u.port, timeout=30) for _ in range(n)]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            for conn in conns:
                conn.connect()
            for i, conn in enumerate(conns):  # every request is sent before any answer is read
                body = json.dumps(failure(i, secrets.token_bytes(16)))
                conn.request("POST", "/v1/failures", body, headers)
            answers = []
            for conn in conns:
                resp = conn.getresponse()
                answers.append((resp.status, resp.read()))
        finally:
            for conn in conns:
                conn.close()
        assert [s for s, _ in answers] == [202] * n
        reports = get(url, token, "/v1/status")["reports"]
        commits = reports["journal_commits"] - before
        assert reports["journaled"] == n
        print(f"{n} concurrent reports: {commits} journal commits")
        assert commits <= n // 4, commits  # far fewer commits than reports
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert journal_rows(data) == n


def report_ops(data: Path) -> int:
    with Store.open(data / "kb.sqlite3") as store:
        (n,) = store.conn.execute(
            "SELECT COUNT(*) FROM ops WHERE kind = 'pattern.report'"
        ).fetchone()
        return int(n)


def test_a_held_stream_is_few_ops_and_a_sigkill_while_held_loses_nothing(
    tmp_path: Path,
) -> None:
    """A steady stream of one pattern is held between writes (node/reporter.py): the
    node writes far fewer ops than windows, and reports held when it is SIGKILLed
    come back from the journal after a restart, counted once."""
    data = prepare(tmp_path, 1, 0)[0].dir
    (data / "node.toml").write_text("report_window_ms = 100\nreport_hold_max_ms = 60000\n")
    sent, held = 0, 0
    with node(data) as (proc, url, token):
        stream_until = time.monotonic() + 1.5  # ~15 windows of reports
        for _ in range(3_000):  # bounded in count too
            doc = failure(sent, secrets.token_bytes(16))
            status, answer = post(url, token, "/v1/failures", doc)
            assert status == 202
            sent += 1
            unsent = get(url, token, f"/v1/failures/count?pattern={answer['pattern']}")
            held = unsent["local_unsent"]
            if time.monotonic() > stream_until and held >= 2:  # some of it held
                break
        reports = get(url, token, "/v1/status")["reports"]
        assert held >= 2 and reports["held"] == 1 and reports["journaled"] == held
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    written, rows = report_ops(data), journal_rows(data)
    assert sum(counted(data)) + rows == sent and rows == held
    # the writes came after holds doubling from one window (0.1 s): ~log2 of the
    # stream's length in windows, where an op per window would be one per 0.1 s
    print(f"{sent} reports: {written} ops before the SIGKILL, {rows} held in the journal")
    assert 1 <= written <= 12
    with node(data) as (proc, url, token):
        proc.send_signal(signal.SIGTERM)  # a stop writes what is held
        assert proc.wait(timeout=30) == 0
    assert counted(data) == [sent] and journal_rows(data) == 0
    assert report_ops(data) == written + 1
