"""The SDK's HTTP plumbing: stdlib http.client to 127.0.0.1, failing fast and open."""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import json
import logging
import os
import select
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from gossipmind.api.process import still_running
from gossipmind.api.token import usable
from gossipmind.core.errors import ConfigError, NetworkError

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
    if not usable(token):  # (sent, it would be refused: a report would be lost)
        raise ConfigError(f"{data_dir / 'api.token'} holds no usable token")
    return url, token


MAX_PID = 2**31 - 1  # a pid_t; os.kill raises OverflowError past it


def _api_file(text: str) -> tuple[str, int, int | None]:
    """The URL, pid and (if recorded: older nodes did not) start time ``api.json``
    holds (ValueError if it does not hold them)."""
    doc = json.loads(text)
    if not isinstance(doc, dict):
        doc = {}
    url, pid, started = doc.get("url"), doc.get("pid"), doc.get("starttime")
    if not isinstance(url, str) or type(pid) is not int or not 0 < pid <= MAX_PID:
        raise ValueError(f"api.json holds no url and pid: {text[:200]!r}")
    if started is not None and (type(started) is not int or not 0 <= started < 2**63):
        raise ValueError(f"api.json holds a bad starttime: {text[:200]!r}")
    return url, pid, started


class ForkSafe(Protocol):
    def _after_fork(self) -> None: ...


_FORK_SAFE: weakref.WeakSet[ForkSafe] = weakref.WeakSet()


def fork_safe(obj: ForkSafe) -> None:
    """Have ``obj._after_fork()`` run in a forked child (its locks and threads are
    the parent's there)."""
    _FORK_SAFE.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_FORK_SAFE):
        obj._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class MaybeSent(NetworkError):
    """The request went out but no answer came back (a read timeout, a connection
    dropped mid-answer, a 5xx): the node may have processed it. :class:`Http` never
    sends it again; the outbox sends a report again with the same id, which the
    node counts once (within :data:`MAX_SENDS` and :data:`MAX_RESEND_S`)."""


REUSE_IDLE_S = 2.0  # s a keep-alive connection may idle and be reused (the node keeps it 5 s)
MAX_PATIENCE_S = 10.0  # s the outbox thread waits at most for the answer to a re-send
# how many times the timeout a request waits (the outbox thread's re-sends: see Outbox.drain)
PATIENCE: contextvars.ContextVar[float] = contextvars.ContextVar("gossipmind_patience")


def parse_url(url: str) -> tuple[str, int]:
    """The host and port of a node API URL: ``http://`` on loopback with an explicit
    port, else :class:`ConfigError` (it comes from ``api.json`` or the agent's code)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad node API url {url!r}: {exc}") from None
    if parts.scheme != "http":
        raise ConfigError(f"bad node API url {url!r}: the scheme must be http")
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"the node API must be on loopback, not {parts.hostname}")
    if not port:
        raise ConfigError(f"bad node API url {url!r}: it names no port")
    return parts.hostname, port


def _stale(sock: socket.socket | None) -> bool:
    """An idle keep-alive connection the node closed (readable: EOF, or bytes no
    request asked for). A request written on it would be lost."""
    if sock is None:
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class Http:
    def __init__(self, url: str, token: str, timeout: float) -> None:
        self.host, self.port = parse_url(url)
        self.token = token
        self.timeout = timeout
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []  # keep-alive, since
        self._stream: http.client.HTTPConnection | None = None
        self._patient: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        _FORK_SAFE.add(self)

    def _after_fork(self) -> None:
        """In a forked child: the parent's connections are not ours to share, and a
        lock a parent thread held would never be released."""
        self._lock = threading.Lock()
        self._idle, self._stream = [], None
        self._patient = weakref.WeakSet()

    def close(self) -> None:
        """Close every connection, including a live event stream (which then ends)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            stream = self._stream
        for conn, _ in idle:
            conn.close()
        if stream is not None and stream.sock is not None:
            try:
                stream.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in readline
            except OSError:
                log.debug("event stream socket already closed")

    def _borrow(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection, and whether it is a kept-alive one (reused) rather than new."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    return self._conn(), False
                conn, since = self._idle.pop()
            if now - since < REUSE_IDLE_S and not _stale(conn.sock):
                return conn, True
            conn.close()

    def interrupt_patient(self) -> None:
        """Cut short the requests under way that wait longer than the timeout (the
        outbox thread's re-sends, which raise :class:`MaybeSent`: sent again, counted
        once), so that an agent's ``flush()`` or ``close()`` does not wait for them."""
        with self._lock:
            conns = list(self._patient)
        for conn in conns:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):  # (closed meanwhile)
                    sock.shutdown(socket.SHUT_RDWR)

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._patient.discard(conn)
            if not self._closed and len(self._idle) < 4 and conn.sock is not None:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    def _conn(self, timeout: float | None = None) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One JSON request; NetworkError when the node cannot be reached.

        A request is sent again only when it certainly was not processed: it could
        not be written whole on a kept-alive connection the node had closed (or,
        for a GET, which changes nothing, the answer broke off on one). Never after
        a timeout. A POST written whole whose answer did not come raises
        :class:`MaybeSent`: the node may have it.
        """
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = min(self.timeout * PATIENCE.get(1.0), max(self.timeout, MAX_PATIENCE_S))
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            conn, reused = self._borrow()
            retry = reused and attempt == 0
            if timeout > self.timeout:  # (see interrupt_patient)
                with self._lock:
                    self._patient.add(conn)
            try:
                if conn.sock is None:
                    conn.connect()
                conn.sock.settimeout(timeout)
            except OSError as exc:  # nothing was written
                conn.close()
                raise NetworkError(f"node API unreachable: {exc}") from exc
            try:
                conn.request(method, path, body=data, headers=headers)
            except (OSError, http.client.HTTPException) as exc:  # not written whole
                conn.close()
                if retry and not isinstance(exc, TimeoutError):
                    continue  # a keep-alive connection the node closed: never processed
                raise NetworkError(f"node API unreachable: {exc}") from exc
            try:
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if method != "GET":
                    raise MaybeSent(
                        f"node API did not answer {method} {path} (it may have it): {exc}"
                    ) from exc
                if retry and not isinstance(exc, TimeoutError):
                    continue
                raise NetworkError(f"node API unreachable: {exc}") from exc
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


def env_data_dir() -> Path:
    return Path(os.environ.get("GOSSIPMIND_HOME", "~/.gossipmind")).expanduser()


def monotonic() -> float:
    return time.monotonic()
