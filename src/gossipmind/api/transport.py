"""The SDK's HTTP plumbing: stdlib http.client to 127.0.0.1, failing fast and open."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gossipmind.api.process import still_running
from gossipmind.core.errors import ConfigError, GossipmindError, NetworkError

log = logging.getLogger("gossipmind.sdk")


class NodeNotFound(ConfigError):
    """The data dir holds no ``api.json``/``api.token``, or an ``api.json`` left by a
    process that is gone: its node is not running (yet), or serves no API."""


def discover(data_dir: Path) -> tuple[str, str]:
    """The node's API URL and token from its data dir (``api.json``, ``api.token``).

    :class:`NodeNotFound` if they are missing or ``api.json`` names a process that
    is not running (a stale file: whatever listens on its port now must not get the
    token), else :class:`ConfigError` if they cannot be read. The process is the
    one that wrote the file only if it started when the file says (``starttime``,
    where there is procfs): after a SIGKILL, another process may reuse the pid.
    """
    try:
        url, pid, started = _api_file((data_dir / "api.json").read_text())
        token = (data_dir / "api.token").read_text().strip()
    except FileNotFoundError as exc:
        raise NodeNotFound(f"no running node API found in {data_dir}: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no running node API found in {data_dir}: {exc}") from exc
    if not still_running(pid, started):
        raise NodeNotFound(
            f"no running node API found in {data_dir}: api.json is stale "
            f"(process {pid}, which wrote it, is gone)"
        )
    return url, token


def _api_file(text: str) -> tuple[str, int, int | None]:
    """The URL, pid and (if recorded: older nodes did not) start time ``api.json``
    holds (ValueError if it does not hold them)."""
    doc = json.loads(text)
    if not isinstance(doc, dict):
        doc = {}
    url, pid, started = doc.get("url"), doc.get("pid"), doc.get("starttime")
    if not isinstance(url, str) or type(pid) is not int or pid <= 0:
        raise ValueError(f"api.json holds no url and pid: {text[:200]!r}")
    if started is not None and (type(started) is not int or started < 0):
        raise ValueError(f"api.json holds a bad starttime: {text[:200]!r}")
    return url, pid, started


_FORK_SAFE: weakref.WeakSet[Http | Outbox] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for obj in list(_FORK_SAFE):
        obj._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Http:
    def __init__(self, url: str, token: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError(f"the node API must be on loopback, not {parts.hostname}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.token = token
        self.timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []  # keep-alive connections
        self._stream: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._closed = False
        _FORK_SAFE.add(self)

    def _after_fork(self) -> None:
        """In a forked child: the parent's connections are not ours to share, and a
        lock a parent thread held would never be released."""
        self._lock = threading.Lock()
        self._idle, self._stream = [], None

    def close(self) -> None:
        """Close every connection, including a live event stream (which then ends)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            stream = self._stream
        for conn in idle:
            conn.close()
        if stream is not None and stream.sock is not None:
            try:
                stream.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in readline
            except OSError:
                log.debug("event stream socket already closed")

    def _borrow(self) -> http.client.HTTPConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._conn()

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < 4:
                self._idle.append(conn)
                return
        conn.close()

    def _conn(self, timeout: float | None = None) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One JSON request; NetworkError when the node cannot be reached."""
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):  # one retry on a stale keep-alive connection
            conn = self._borrow() if attempt == 0 else self._conn()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if attempt:
                    raise NetworkError(f"node API unreachable: {exc}") from exc
                continue
            self._give_back(conn)
            try:
                return resp.status, json.loads(raw) if raw else None
            except ValueError as exc:
                raise NetworkError(f"node API sent invalid JSON ({resp.status})") from exc
        raise NetworkError("node API unreachable")  # pragma: no cover - loop returns or raises

    def events(self, stop: threading.Event) -> Iterator[tuple[str, dict[str, Any]]]:
        """Server-sent events until the stream ends or ``stop`` is set."""
        conn = self._conn(timeout=30)
        with self._lock:
            if self._closed:
                return
            self._stream = conn
        try:
            conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {self.token}"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise NetworkError(f"event stream refused: HTTP {resp.status}")
            event, data = "message", ""
            while not stop.is_set():
                line = resp.readline()
                if not line:
                    return
                text = line.decode().rstrip("\r\n")
                if text.startswith("event:"):
                    event = text[6:].strip()
                elif text.startswith("data:"):
                    data += text[5:].strip()
                elif not text and data:
                    yield event, json.loads(data)
                    event, data = "message", ""
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise NetworkError(f"event stream broken: {exc}") from exc
        finally:
            with self._lock:
                self._stream = None
            conn.close()


class Outbox:
    """Bounded queue of requests the node could not take yet (fail open, send later)."""

    def __init__(self, maxlen: int) -> None:
        self.items: deque[tuple[str, dict[str, Any]]] = deque(maxlen=maxlen)
        self.dropped = 0
        self._lock = threading.Lock()
        self._draining = threading.Lock()  # one drainer at a time: nothing is sent twice
        _FORK_SAFE.add(self)

    def _after_fork(self) -> None:
        """In a forked child no thread drains: a lock held in the parent at the fork
        would never be released (flush() would hang). The queued requests are the
        parent's to send: the child's copy is dropped, or both would send them."""
        self._lock = threading.Lock()
        self._draining = threading.Lock()
        self.items.clear()

    def put(self, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            if len(self.items) == self.items.maxlen:
                self.dropped += 1
            self.items.append((path, body))

    def drain(self, send: Callable[[str, dict[str, Any]], None], *, wait: bool = False) -> int:
        """Send queued items in order until one fails; return how many went.

        One thread drains at a time: while another does, this returns 0 at once
        (``wait=True``: waits for it, then sends what is left). An item leaves the
        queue only after it was sent, so a failed send loses nothing.
        """
        if not self._draining.acquire(blocking=wait):
            return 0
        try:
            sent = 0
            while True:
                with self._lock:
                    if not self.items:
                        return sent
                    item = self.items[0]
                try:
                    send(*item)
                except GossipmindError:  # unreachable or misconfigured: keep it for later
                    return sent
                with self._lock:
                    if self.items and self.items[0] is item:  # (not dropped meanwhile)
                        self.items.popleft()
                sent += 1
        finally:
            self._draining.release()


def backoff_delays(first: float = 0.2, cap: float = 5.0) -> Iterator[float]:
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


def env_data_dir() -> Path:
    return Path(os.environ.get("GOSSIPMIND_HOME", "~/.gossipmind")).expanduser()


def monotonic() -> float:
    return time.monotonic()
