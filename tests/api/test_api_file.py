"""api.json: how a client finds its node's API. It must never name a server that
is gone: whatever listens on that port now would get the bearer token (and could
fake the node's answers). Written atomically and private, with the pid and the
process's start time; removed when the API stops, however it stops; refused by
clients when its pid is gone or now belongs to a process that started later."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio

from conftest import fleet
from gossipmind.api import process
from gossipmind.api.client import Client
from gossipmind.api.server import serve_api
from gossipmind.api.token import ensure_token
from gossipmind.api.transport import NodeNotFound, discover
from gossipmind.core.errors import ConfigError, NetworkError


def gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    code = "import os; print(os.getpid())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout)


async def test_api_json_is_private_names_the_pid_and_goes_when_the_api_stops(
    tmp_path: Path,
) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        path = r.spec.dir / "api.json"
        expected: dict[str, Any] = {"url": r.url, "pid": os.getpid()}
        if process.has_procfs():  # and the start time, so a reused pid is not taken for it
            expected["starttime"] = process.start_time(os.getpid())
        assert json.loads(path.read_text()) == expected
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert discover(r.spec.dir)[0] == r.url
        assert [p.name for p in r.spec.dir.iterdir() if p.name.endswith(".tmp")] == []
    assert not path.exists()


async def test_an_api_that_fails_to_start_leaves_no_api_json(tmp_path: Path) -> None:
    """A stale api.json (from a process killed before it could remove it) goes too."""
    async with fleet(tmp_path, 1, 0, api=False) as (r,):
        stale = r.spec.dir / "api.json"
        stale.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": os.getpid()}))
        token = r.spec.dir / "api.token"
        ensure_token(token)
        os.chmod(token, 0o644)
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConfigError, match="must be 0600"):
                await nursery.start(serve_api, r.node)
        assert not stale.exists()


def test_an_api_json_of_a_process_that_is_gone_is_refused(tmp_path: Path) -> None:
    (tmp_path / "api.token").write_text("t" * 40 + "\n")
    api = tmp_path / "api.json"
    api.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": gone_pid()}))
    with pytest.raises(NodeNotFound, match="stale"):
        discover(tmp_path)
    client = Client(tmp_path, stream=False)  # the SDK: a node that is down, not an error
    try:
        with pytest.raises(NetworkError):
            client.count_failures(b"\x02" * 32)
        assert client.stats.errors == []
    finally:
        client.close()
    for doc in ({"url": "http://127.0.0.1:9"}, {"url": "http://127.0.0.1:9", "pid": "1"}):
        api.write_text(json.dumps(doc))  # no usable pid: a broken file, said as such
        with pytest.raises(ConfigError, match="no url and pid") as info:
            discover(tmp_path)
        assert not isinstance(info.value, NodeNotFound)
    api.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": os.getpid()}))
    assert discover(tmp_path) == ("http://127.0.0.1:9", "t" * 40)


class Stranger(BaseHTTPRequestHandler):
    """Whatever listens on the dead node's port now: it collects bearer tokens."""

    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.server.seen.append(self.headers.get("Authorization"))  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(202)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def stranger() -> Iterator[tuple[str, list[str]]]:
    srv = HTTPServer(("127.0.0.1", 0), Stranger)
    srv.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}", srv.seen  # type: ignore[attr-defined]
    srv.shutdown()
    srv.server_close()
    thread.join(10)


@pytest.mark.skipif(not process.has_procfs(), reason="start times come from /proc")
def test_an_api_json_whose_pid_was_reused_is_refused_and_gets_no_token(
    tmp_path: Path, stranger: tuple[str, list[str]]
) -> None:
    """After a SIGKILL the node's pid went to another live process (this one stands
    for it): its start time is not the one api.json recorded."""
    url, seen = stranger
    (tmp_path / "api.token").write_text("secret-token-of-the-node\n")
    api = tmp_path / "api.json"
    started = process.start_time(os.getpid())
    assert started is not None
    api.write_text(json.dumps({"url": url, "pid": os.getpid(), "starttime": started - 1}))
    with pytest.raises(NodeNotFound, match="stale"):
        discover(tmp_path)
    client = Client(tmp_path, stream=False)
    try:
        client.report_failure(TimeoutError("t"), service="s", operation="o")
        assert client.stats.reports_queued == 1 and client.stats.errors == []
    finally:
        client.close()
    assert seen == []  # the token never left the agent
    api.write_text(json.dumps({"url": url, "pid": os.getpid(), "starttime": started}))
    assert discover(tmp_path) == (url, "secret-token-of-the-node")  # the very process


def test_an_api_json_without_a_start_time_or_without_proc_checks_the_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older node's api.json (no starttime), or a system without /proc: the pid alone."""
    (tmp_path / "api.token").write_text("t" * 40 + "\n")
    api = tmp_path / "api.json"
    api.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": os.getpid()}))
    assert discover(tmp_path) == ("http://127.0.0.1:9", "t" * 40)
    api.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": gone_pid()}))
    with pytest.raises(NodeNotFound, match="stale"):
        discover(tmp_path)
    monkeypatch.setattr(process, "has_procfs", lambda: False)
    doc = {"url": "http://127.0.0.1:9", "pid": os.getpid(), "starttime": 1}
    api.write_text(json.dumps(doc))
    assert discover(tmp_path) == ("http://127.0.0.1:9", "t" * 40)
    api.write_text(json.dumps({**doc, "pid": gone_pid()}))
    with pytest.raises(NodeNotFound, match="stale"):
        discover(tmp_path)
    for bad in ("1", -1, 1.5):  # a start time that is not one: a broken file
        api.write_text(json.dumps({**doc, "starttime": bad}))
        with pytest.raises(ConfigError, match="starttime") as info:
            discover(tmp_path)
        assert not isinstance(info.value, NodeNotFound)
