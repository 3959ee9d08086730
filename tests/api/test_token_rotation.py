"""Rotating the API token while the node runs (``gossipmind token rotate``).

The running API takes the new token at once for a request that presents it, and
within a second for everyone else; the old one gets 401 from then on, and an
event stream opened with it ends. A token file that becomes unusable makes the
API refuse everything (503) until it is mended — closed, never open. The SDK
reading the data dir follows a rotation without losing a report.
"""

from __future__ import annotations

import functools
import json
import os
import stat
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from click.testing import CliRunner

from conftest import Running, fleet
from gossipmind.api import token as token_mod
from gossipmind.api.client import Client
from gossipmind.api.server import Api
from gossipmind.api.token import (
    RECHECK_S,
    TokenFile,
    ensure_token,
    read_token,
    rotate_token,
)
from gossipmind.cli.main import cli
from gossipmind.core.errors import ConfigError, NetworkError
from gossipmind.learn.patterns import Failure, reduce
from gossipmind.testnet.setup import prepare

BOUND = 20.0  # s: the most any wait below may take
POLL = 0.05


def status(r: Running, token: str, path: str = "/v1/status") -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=r.url, timeout=10) as c:
        return c.get(path, headers=headers).status_code


async def status_of(r: Running, token: str, path: str = "/v1/status") -> int:
    return await trio.to_thread.run_sync(status, r, token, path)


async def until(r: Running, token: str, want: int) -> list[int]:
    """Ask with ``token`` every POLL until the answer is ``want`` (bounded): every answer."""
    seen: list[int] = []
    with trio.move_on_after(BOUND):
        while not seen or seen[-1] != want:
            seen.append(await status_of(r, token))
            if seen[-1] != want:
                await trio.sleep(POLL)
    return seen


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_the_new_token_works_at_once_and_the_old_one_no_longer(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        old = r.token
        assert await status_of(r, old) == 200
        rotate_token(r.spec.dir / "api.token")
        new = r.token
        assert new != old and len(new) >= 32 and private(r.spec.dir / "api.token")
        # a token other than the one held makes the node look at the file at once
        assert await status_of(r, new) == 200
        assert await status_of(r, old) == 401
        assert await status_of(r, new) == 200


async def test_the_old_token_stops_working_without_anyone_presenting_the_new(
    tmp_path: Path,
) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        old = r.token
        assert await status_of(r, old) == 200
        rotate_token(r.spec.dir / "api.token")
        seen = await until(r, old, 401)
        assert seen[-1] == 401, seen
        assert set(seen) <= {200, 401}, seen
        # the re-check is paced: about RECHECK_S / POLL answers at most before the 401
        assert len(seen) <= 1 + 2 * RECHECK_S / POLL + 20, seen
        assert await status_of(r, old) == 401  # and it stays refused


async def test_an_unusable_token_file_refuses_everything_until_mended(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        path = r.spec.dir / "api.token"
        token = r.token
        before = r.node.status()["ops"]
        os.chmod(path, 0o644)  # readable by others: no longer a secret
        assert (await until(r, token, 503))[-1] == 503
        assert await status_of(r, "wrong-" + token) == 503
        assert await status_of(r, "", "/openapi.json") == 200  # the public document only
        os.chmod(path, 0o600)
        assert (await until(r, token, 200))[-1] == 200  # mended: the same token again
        path.write_text("short\n")  # no usable token
        assert (await until(r, token, 503))[-1] == 503
        path.unlink()  # gone
        assert await status_of(r, token) == 503
        rotate_token(path)  # a new one
        assert private(path) and await status_of(r, r.token) == 200
        assert await status_of(r, token) == 401
        assert r.node.status()["ops"] == before  # nothing else changed


def read_events(
    url: str, token: str, ready: threading.Event, out: list[str], *, leave: bool = False
) -> None:
    """Follow /v1/events until the node ends the stream (or, ``leave``, until it
    says it is ready); ``ready`` once it says so."""
    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx.Timeout(10, read=BOUND)
    with (
        httpx.Client(base_url=url, timeout=timeout) as c,
        c.stream("GET", "/v1/events", headers=headers) as resp,
    ):
        out.append(f"status {resp.status_code}")
        for line in resp.iter_lines():
            out.append(line)
            if line == "event: ready":
                ready.set()
                if leave:
                    return
    out.append("ended")


async def follow(
    url: str, token: str, ready: threading.Event, out: list[str], leave: bool = False
) -> None:
    """:func:`read_events` in a thread the test abandons if it fails (never hangs)."""
    read = functools.partial(read_events, leave=leave)
    await trio.to_thread.run_sync(read, url, token, ready, out, abandon_on_cancel=True)


async def test_an_event_stream_opened_with_the_old_token_ends(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        ready, lines = threading.Event(), list[str]()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow, r.url, r.token, ready, lines)
            with trio.fail_after(BOUND):
                while not ready.is_set():
                    await trio.sleep(POLL)
            rotate_token(r.spec.dir / "api.token")
            with trio.fail_after(BOUND):  # the stream ends by itself
                while not lines or lines[-1] != "ended":
                    await trio.sleep(POLL)
        assert lines[0] == "status 200" and "event: ready" in lines
        again: list[str] = []
        with trio.fail_after(BOUND):
            await follow(r.url, r.token, threading.Event(), again, leave=True)
        assert again[0] == "status 200" and again[-1] == "event: ready"  # the new token's


class StubNode:
    """What ``Api.events`` uses of a node: fix transitions on a channel."""

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[Any](10)
        self.fixes = SimpleNamespace(rows=lambda **_: [])

    def touch(self) -> None:
        pass

    def fix_events(self) -> Any:
        return self.recv


async def asgi_get(app: Any, path: str, token: str, out: list[bytes]) -> None:
    """One GET through the ASGI app; the body chunks, then b"<END>"."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2),
        "headers": [(b"authorization", f"Bearer {token}".encode())],
    }  # fmt: skip
    done = trio.Event()

    async def receive() -> dict[str, Any]:
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.body":
            out.append(msg.get("body", b""))
            if not msg.get("more_body"):
                out.append(b"<END>")
                done.set()

    await app(scope, receive, send)


async def test_a_stream_on_a_revoked_token_gets_no_event_after_the_rotation_is_seen(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "api.token"
    tokens = TokenFile(path, clock=trio.current_time)
    old = tokens.current()
    assert old is not None
    node = StubNode()
    api = Api(node, tokens)  # type: ignore[arg-type]
    api.summary = dict  # type: ignore[method-assign]
    body: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(asgi_get, api.app, "/v1/events", old, body)
        await trio.testing.wait_all_tasks_blocked()
        assert b"event: ready" in b"".join(body)
        rotate_token(path)
        mock_clock.jump(0.5)
        new = path.read_text().strip()
        assert api.refused(new.encode()) is None  # the node holds the new token now
        assert api.refused(old.encode()) is not None
        row = {"fix": "ab" * 32, "status": "accepted"}
        node.send.send_nowait(SimpleNamespace(row=row, old="provisional"))
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(RECHECK_S)
        await trio.testing.wait_all_tasks_blocked()
    assert body[-1] == b"<END>"
    assert not any(b"event: fix" in chunk for chunk in body)  # ended, and sent nothing more


FAILURE = Failure("search", "query", "TimeoutError", "search timed out after 3000 ms")


async def report_timeout(client: Client) -> None:
    """The SDK reports FAILURE (from a worker thread: it blocks)."""
    report = functools.partial(
        client.report_failure, TimeoutError(FAILURE.message), service="search", operation="query"
    )
    await trio.to_thread.run_sync(report)


async def test_the_sdk_reading_the_data_dir_follows_a_rotation(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        pattern = reduce(FAILURE).pattern
        client = Client(r.spec.dir, stream=False, timeout=10)
        given = Client(r.spec.dir, url=r.url, token=r.token, stream=False, timeout=10)
        try:

            def report() -> None:
                client.report_failure(
                    TimeoutError(FAILURE.message), service="search", operation="query"
                )

            async def counted(want: int) -> int:
                """The fleet's count of the pattern, once it is ``want`` (bounded)."""
                n = -1
                with trio.move_on_after(BOUND):
                    while n != want:
                        doc = await trio.to_thread.run_sync(client.count_failures, pattern)
                        n = int(doc["count"])
                        await trio.sleep(0 if n == want else POLL)
                return n

            await trio.to_thread.run_sync(report)
            assert await counted(1) == 1
            old, first = r.token, client._http
            rotate_token(r.spec.dir / "api.token")
            assert (await until(r, old, 401))[-1] == 401  # the node dropped the old token
            await trio.to_thread.run_sync(report)  # refused once (401), asked again: taken
            assert await counted(2) == 2
            assert client.stats.reports_sent == 2 and client.stats.reports_refused == 0
            assert client.outbox.pending() == 0 and client.stats.errors == []
            assert first is not None and client._http is not first  # re-read after the 401
            # a client given the token directly keeps it: it must be given the new one;
            # meanwhile its reports wait in its queue (a 401 was not processed)
            with pytest.raises(NetworkError, match="401"):
                await trio.to_thread.run_sync(given.count_failures, pattern)
            await report_timeout(given)
            assert given.stats.reports_refused == 0 and given.outbox.pending() == 1
        finally:
            client.close()
            given.close()


async def test_an_empty_token_file_makes_the_sdk_queue_not_drop(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        pattern = reduce(FAILURE).pattern
        path = r.spec.dir / "api.token"
        path.write_text("")  # truncated (a full disk, a tool that truncates first)
        client = Client(r.spec.dir, stream=False, timeout=10)
        try:
            await report_timeout(client)
            assert client.stats.reports_refused == 0 and client.outbox.pending() == 1
            assert (await until(r, "", 503))[-1] == 503  # the node: unusable, not "missing"
            rotate_token(path)  # mended: the queue is sent
            with trio.fail_after(BOUND):
                while client.outbox.pending():
                    await trio.sleep(POLL)
            doc = await trio.to_thread.run_sync(client.count_failures, pattern)
            with trio.fail_after(BOUND):
                while int(doc["count"]) != 1:
                    await trio.sleep(POLL)
                    doc = await trio.to_thread.run_sync(client.count_failures, pattern)
            assert client.stats.reports_refused == 0
        finally:
            client.close()


def test_the_token_file_is_looked_at_no_more_than_once_a_period(tmp_path: Path) -> None:
    path = tmp_path / "api.token"
    now = [100.0]
    tokens = TokenFile(path, clock=lambda: now[0])
    first = tokens.current()
    assert first == ensure_token(path) and tokens.version == 0
    rotate_token(path)
    assert tokens.current() == first  # not looked at yet
    now[0] += RECHECK_S
    second = tokens.current()
    assert second is not None and second != first and tokens.version == 1
    path.write_text(second + "\n")  # the same token written again: no rotation
    now[0] += RECHECK_S
    assert tokens.current() == second and tokens.version == 1
    os.chmod(path, 0o640)
    assert tokens.current() == second  # not looked at yet
    assert tokens.current(force=True) is None
    assert tokens.problem is not None and "0600" in tokens.problem and "rotate" in tokens.problem
    os.chmod(path, 0o600)
    assert tokens.current() is None  # not looked at yet
    assert tokens.current(force=True) == second and tokens.problem is None


def test_a_rewrite_in_place_with_the_same_size_and_times_is_seen(tmp_path: Path) -> None:
    """The content is compared, not the file's size and times: a copy that keeps
    them (``cp -p``, a restore, or a write within one timestamp tick) is seen."""
    path = tmp_path / "api.token"
    now = [0.0]
    tokens = TokenFile(path, clock=lambda: now[0])
    old = tokens.current()
    assert old is not None
    st = path.stat()
    new = "N" * len(old)
    with path.open("r+") as f:  # same inode, same size
        f.write(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert tokens.current(force=True) == new and tokens.version == 1


def test_a_token_is_read_from_what_was_checked_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO, a huge file or another user's file in the token's place is refused at
    once (never read: a FIFO would block the node's event loop)."""
    path = tmp_path / "api.token"
    os.mkfifo(path, 0o600)
    done: list[BaseException] = []

    def read() -> None:
        try:
            read_token(path)
        except BaseException as exc:  # the error is the point
            done.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(BOUND)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert "not a regular file" in str(done[0])
    path.unlink()
    path.write_text("x" * 5000)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="no usable token"):
        read_token(path)
    path.write_text("y" * 40)
    assert read_token(path) == "y" * 40
    monkeypatch.setattr(token_mod.os, "geteuid", lambda: os.getuid() + 1)
    with pytest.raises(ConfigError, match="belongs to uid"):
        read_token(path)
    with pytest.raises(ConfigError, match="rotate the token as that user"):
        rotate_token(path)  # (root by sudo would leave a token the node refuses)
    assert read_token.__module__ == token_mod.__name__ and path.read_text() == "y" * 40


def test_rotate_refuses_what_is_not_a_data_dir(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no data dir"):
        rotate_token(tmp_path / "missing" / "api.token")
    (tmp_path / "api.token").mkdir()
    with pytest.raises(Exception, match="is a directory"):
        rotate_token(tmp_path / "api.token")


def test_the_cli_rotates_the_token(tmp_path: Path) -> None:
    (spec,) = prepare(tmp_path / "net", 1, 0)
    runner = CliRunner()
    path = spec.dir / "api.token"
    old = ensure_token(path)
    out = runner.invoke(cli, ["--data-dir", str(spec.dir), "token", "rotate", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["rotated"] == str(path) and doc["running_api"] is None
    new = path.read_text().strip()
    assert new != old and private(path) and new not in out.output
    plain = runner.invoke(cli, ["--data-dir", str(spec.dir), "token", "rotate"])
    assert plain.exit_code == 0 and "no node running" in plain.output
    assert path.read_text().strip() not in (old, new)
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = runner.invoke(cli, ["--data-dir", str(empty), "token", "rotate"])
    assert bad.exit_code == 4 and "not a gossipmind data dir" in bad.output
    assert list(empty.iterdir()) == []  # nothing written
    helped = runner.invoke(cli, ["token", "--help"])
    assert helped.exit_code == 0 and "rotate" in helped.output


async def test_the_cli_names_the_running_node(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        old = r.token
        args = ["--data-dir", str(r.spec.dir), "token", "rotate"]
        out = await trio.to_thread.run_sync(CliRunner().invoke, cli, args)
        assert out.exit_code == 0, out.output
        assert r.url in out.output
        assert await status_of(r, r.token) == 200 and await status_of(r, old) == 401
