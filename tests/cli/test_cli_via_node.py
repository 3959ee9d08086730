"""A writing command while a node holds the store goes through that node's API —
and only through a live one: an api.json left by a process that is gone must not
send the bearer token (nor the op) to whatever listens on its port now."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from test_cli import Dirs, key, net

from gossipmind.store.sqlite import Store

__all__ = ["net"]  # the fixture, shared with test_cli


class Stranger(BaseHTTPRequestHandler):
    """Whatever took the port: keeps what it is sent, and fakes success."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def _answer(self) -> None:
        self.seen.append((self.path, self.headers.get("authorization")))
        out = json.dumps({"op": "ab" * 32, "key": "cd" * 32}).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def gone_pid() -> int:
    code = "import os; print(os.getpid())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout)


def test_a_stale_api_json_gets_no_token_and_no_op(net: Dirs) -> None:
    d = net
    agent = key(d, "agent")
    before = d.json("admin", "status")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stranger)
    Stranger.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    admin = d.root / "admin"
    (admin / "api.token").write_text("secret-token-" + "x" * 30 + "\n")
    (admin / "api.token").chmod(0o600)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    (admin / "api.json").write_text(json.dumps({"url": url, "pid": gone_pid()}))
    try:
        with Store.open(admin / "kb.sqlite3"):  # a node (say, --no-api) holds the store
            result = d.run("admin", "grant", agent, "--role", "member", ok=False)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert Stranger.seen == []
    assert result.exit_code == 5, (result.output, result.exception)
    assert "serves no local API" in result.output and "nothing was written" in result.output
    assert d.json("admin", "status") == before


def test_a_write_through_the_node_outwaits_its_write_gate() -> None:
    """A writing command just after its node started with no peer answering (a
    restored store, peers down) gave up after 10 s (`node API did not answer POST
    /v1/ops (it may have it)`, exit 1) while the node, whose first write waits up to
    WRITE_GATE_S for a sync, then wrote the op."""
    from gossipmind.cli.write import NODE_WRITE_TIMEOUT_S
    from gossipmind.node.node import WRITE_GATE_S

    assert NODE_WRITE_TIMEOUT_S >= WRITE_GATE_S + 10
