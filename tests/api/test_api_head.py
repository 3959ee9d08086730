"""HEAD /v1/events (Starlette answers HEAD on every GET route) opens no event stream."""

from __future__ import annotations

import socket
from contextlib import suppress
from pathlib import Path

import trio

from conftest import Running, fleet
from gossipmind.node.listeners import TooManyListeners


def head_then_status(port: int, token: str) -> list[bytes]:
    """HEAD /v1/events, then GET /v1/status on the same keep-alive connection; the
    status lines of the answers (``b""``: none came within 5 s)."""
    auth = f"Authorization: Bearer {token}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"HEAD /v1/events HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")
        head = _read_head(s)
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")
        status = _read_head(s)
    return [head.split(b"\r\n")[0], status.split(b"\r\n")[0]]


def _read_head(s: socket.socket) -> bytes:
    """An answer's status line and headers (its body, if any, is not read)."""
    data = b""
    for _ in range(64):  # at most 64 reads
        try:
            chunk = s.recv(4096)
        except TimeoutError:
            return b""
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            break
    return data


async def _listeners(r: Running) -> int:
    """The node's open fix-event listeners once it has seen the clients go (at most 10 s)."""
    with trio.move_on_after(10):
        while True:
            with suppress(TooManyListeners):
                r.node.fix_events().close()  # adding one prunes the closed ones
                if len(r.node._fix_listeners) <= 1:
                    break
            await trio.sleep(0.01)
    return len(r.node._fix_listeners) - 1  # (less the one just added and closed)


async def test_head_on_the_event_stream_holds_no_listener_and_the_connection_goes_on(
    tmp_path: Path,
) -> None:
    """Each HEAD left a listener open for good (1 024 of them made every client's event
    stream 503), and the next request on its connection got no answer."""
    async with fleet(tmp_path, 1, 0, learn=False) as (r,):
        port = int(r.url.rsplit(":", 1)[1])
        answers = [await trio.to_thread.run_sync(head_then_status, port, r.token) for _ in range(3)]
        assert await _listeners(r) == 0
        assert answers == [[b"HTTP/1.1 200 ", b"HTTP/1.1 200 "]] * 3
