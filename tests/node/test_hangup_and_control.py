"""SIGHUP (a closed terminal, ssh session or tmux pane) stops a node as cleanly as
SIGTERM, and a bad ``control.json`` is ignored with a warning instead of stopping the
node. Real node processes on 127.0.0.1, the real HTTP API, real SQLite stores."""

from __future__ import annotations

import json
import os
import pty
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from gossipmind.api.client import Client
from gossipmind.store.sqlite import Store
from gossipmind.testnet.setup import prepare

MAIN = "import sys; from gossipmind.cli.main import main; sys.argv[0] = 'gossipmind'; main()"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _kill(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def _report_five(api: str, data_dir: Path) -> None:
    """Five failures the node answers 202 for; its report window (10 min) never closes
    by itself, so only a clean stop writes them."""
    token = (data_dir / "api.token").read_text().strip()
    client = Client(url=api, token=token, stream=False, timeout=5)
    for i in range(5):
        client.report_failure(
            service="hangup", operation="charge", exc_type="TimeoutError",
            message=f"timed out after {i} ms",
        )  # fmt: skip
    assert client.stats.reports_queued == 0  # all five were accepted
    client.close()


def _counts(data_dir: Path) -> list[int]:
    with Store.open(data_dir / "kb.sqlite3") as store:
        return [p.count for p in store.replica.fold.patterns.values() if p.service == "hangup"]


def test_sighup_stops_the_node_cleanly_and_keeps_what_it_acknowledged(tmp_path: Path) -> None:
    spec = prepare(tmp_path, 1, 0)[0]
    (spec.dir / "node.toml").write_text("report_window_ms = 600000\n")
    cmd = [sys.executable, "-c", MAIN, "--data-dir", str(spec.dir), "node", "--api-port", "0"]
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV
    ) as proc:
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["event"] == "ready", ready
            _report_five(ready["api"], spec.dir)
            proc.send_signal(signal.SIGHUP)
            assert proc.wait(timeout=30) == 0
            events = [json.loads(line) for line in proc.stdout.read().splitlines()]
            assert [e["event"] for e in events] == ["stopped"]
        finally:
            _kill(proc)
    assert not (spec.dir / "api.json").exists()
    assert _counts(spec.dir) == [5]


def test_a_closed_terminal_does_not_turn_the_clean_stop_into_an_error(tmp_path: Path) -> None:
    """The node's stdout and stderr are a terminal; the terminal goes away (writes to
    it now fail with EIO), then SIGHUP arrives."""
    spec = prepare(tmp_path, 1, 0)[0]
    (spec.dir / "node.toml").write_text("report_window_ms = 600000\n")
    master, slave = pty.openpty()
    cmd = [sys.executable, "-c", MAIN, "--data-dir", str(spec.dir), "node", "--api-port", "0"]
    proc = subprocess.Popen(cmd, stdout=slave, stderr=slave, env=ENV, start_new_session=True)
    os.close(slave)
    try:
        seen, deadline = b"", time.monotonic() + 60
        while b'"event": "ready"' not in seen and time.monotonic() < deadline:
            seen += os.read(master, 65536)
        line = next(x for x in seen.decode().splitlines() if '"event": "ready"' in x)
        ready = json.loads(line[line.index("{") :])
        _report_five(ready["api"], spec.dir)
        os.close(master)
        master = -1
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=30) == 0
    finally:
        if master >= 0:
            os.close(master)
        _kill(proc)
    assert _counts(spec.dir) == [5]


class Node:
    """A node process whose stderr log lines are collected by a thread."""

    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MAIN, "--data-dir", str(data_dir), "node", "--no-api"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stderr is not None
        self.reader = threading.Thread(target=self._collect, args=(self.proc.stderr,), daemon=True)
        self.reader.start()

    def _collect(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def ready(self) -> dict[str, object]:
        assert self.proc.stdout is not None
        doc: dict[str, object] = json.loads(self.proc.stdout.readline())
        assert doc["event"] == "ready", doc
        return doc

    def close(self) -> None:
        _kill(self.proc)
        self.reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def rest(self) -> list[str]:
        """The log messages not read yet, once the process has exited."""
        self.reader.join(timeout=10)
        lines = []
        while not self.lines.empty():
            lines.append(self.lines.get_nowait())
        return [str(json.loads(x)["msg"]) for x in lines if x.startswith("{")]

    def log_line(self, needle: str, timeout: float = 20) -> str:
        """The next log message containing ``needle``; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if not line.startswith("{"):
                continue  # not a log line: the last words of a dying process
            msg = str(json.loads(line)["msg"])
            if needle in msg:
                return msg
        raise AssertionError(f"no log line with {needle!r} in {timeout} s")


BAD_CONTROL = {
    "a huge integer": '{"drop": ' + "9" * 400 + "}",
    "deep nesting": "[" * 200_000,
    "not an object": "[1, 2]",
    "block not a list": '{"block": "12D3KooW"}',
    "drop not a number": '{"drop": [0.5]}',
    "over 1 MiB": '{"block": ["' + "x" * (1024 * 1024) + '"]}',
}


def test_a_bad_control_json_is_ignored_and_the_node_keeps_going(tmp_path: Path) -> None:
    spec = prepare(tmp_path, 1, 0)[0]
    control = spec.dir / "control.json"
    node = Node(spec.dir)
    try:
        node.ready()
        for what, text in BAD_CONTROL.items():
            control.write_text(text)
            warning = node.log_line("ignoring unreadable")
            assert str(control) in warning and "keeping the previous settings" in warning, what
            assert node.proc.poll() is None, what
        control.unlink()
        os.mkfifo(control)  # opening a FIFO for reading would block the node
        assert "not a regular file" in node.log_line("ignoring unreadable")
        control.unlink()
        control.write_text(json.dumps({"block": ["12D3KooWfake"], "drop": 0.5}))
        node.log_line("partition: blocking 1 peers")  # still watching, and applied
        control.write_text('{"drop": ' + "9" * 400 + "}")
        node.log_line("ignoring unreadable")
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=30) == 0
        assert "link faults: none" not in node.rest()  # the bad file kept drop 0.5
    finally:
        node.close()


@pytest.mark.parametrize("what", ["a huge integer", "deep nesting"])
def test_a_node_starts_with_a_bad_control_json(tmp_path: Path, what: str) -> None:
    """It used to stop the node at every start until someone removed the file."""
    spec = prepare(tmp_path, 1, 0)[0]
    (spec.dir / "control.json").write_text(BAD_CONTROL[what])
    node = Node(spec.dir)
    try:
        node.ready()
        node.log_line("ignoring unreadable")
        time.sleep(0.5)  # a few more rounds of the watcher
        assert node.proc.poll() is None
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=30) == 0
    finally:
        node.close()
