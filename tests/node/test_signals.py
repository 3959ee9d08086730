"""Signals: the first SIGINT/SIGTERM stops the daemon cleanly; a second one
while it is stopping exits at once (a shutdown that hangs must not need
SIGKILL)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
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


def _node(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    code = "import sys; from gossipmind.cli.main import main; sys.argv[0] = 'gossipmind'; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "--data-dir", str(data_dir), "node", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def test_a_node_without_its_api_removes_a_stale_api_json(tmp_path: Path) -> None:
    """`--no-api` must not leave the last run's api.json: a writing CLI command would
    send the token to whatever listens on its port now."""
    spec = prepare(tmp_path, 1, 0)[0]
    stale = spec.dir / "api.json"
    stale.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": os.getpid()}))
    with _node(spec.dir, "--no-api") as proc:
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["event"] == "ready" and "api" not in ready
            assert not stale.exists()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        finally:
            _stop(proc)


def test_a_client_that_does_not_read_cannot_hold_up_the_stop(tmp_path: Path) -> None:
    """Hypercorn sends a response shielded from cancellation: a local client that
    pipelines requests and never reads the answers (its receive buffer tiny) would
    hold a stopping node for as long as it stays connected."""
    spec = prepare(tmp_path, 1, 0)[0]
    with _node(spec.dir) as proc:
        client = socket.socket()
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["event"] == "ready"
            host, port = ready["api"].removeprefix("http://").rsplit(":", 1)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            client.connect((host, int(port)))
            client.settimeout(0.2)
            pipeline = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
            sent, deadline = 0, time.monotonic() + 10
            while sent < len(pipeline) and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):  # the server stopped reading
                    sent += client.send(pipeline[sent : sent + 65536])
            time.sleep(1.0)  # let the server fill its send buffer
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0  # the client is still connected, not reading
            events = [json.loads(line) for line in proc.stdout.read().splitlines()]
            assert [e["event"] for e in events] == ["stopped"]
        finally:
            client.close()
            _stop(proc)
    assert not (spec.dir / "api.json").exists()
    with Store.open(spec.dir / "kb.sqlite3") as store:  # closed cleanly: opens at once
        assert store.replica.root()
