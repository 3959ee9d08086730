"""GET /v1/events holds one node listener while connected, and only then."""

from __future__ import annotations

from contextlib import ExitStack, suppress
from pathlib import Path

import httpx
import trio

from conftest import Running, fleet
from gossipmind.node.listeners import TooManyListeners


def _until_ready(client: httpx.Client, stack: ExitStack | None = None) -> int:
    """Open the event stream and read up to its ``ready`` event; then close it,
    or keep it open on ``stack``."""
    with ExitStack() as own:
        resp = (stack or own).enter_context(client.stream("GET", "/v1/events"))
        if resp.status_code != 200:
            resp.read()
            return resp.status_code
        lines = resp.iter_lines()  # dropping the iterator would close the connection
        (stack or own).callback(lines.close)
        for line in lines:
            if line.startswith("event: ready"):
                break
        return resp.status_code


def _client(r: Running) -> httpx.Client:
    return httpx.Client(base_url=r.url, headers={"authorization": f"Bearer {r.token}"}, timeout=5)


async def _settled(r: Running) -> int:
    """The node's fix-event listeners, counting one added (and closed) just now,
    once the server has seen the disconnects (adding one prunes the closed ones)."""
    with trio.move_on_after(10):
        while True:
            with suppress(TooManyListeners):  # the server has not seen them go yet
                r.node.fix_events().close()
                if len(r.node._fix_listeners) <= 1:
                    break
            await trio.sleep(0.01)
    return len(r.node._fix_listeners)


async def test_clients_that_come_and_go_leave_no_listener_behind(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0, learn=False) as (r,):

        def many() -> list[int]:
            with _client(r) as c:
                return [_until_ready(c) for _ in range(200)]

        codes = await trio.to_thread.run_sync(many)
        assert set(codes) == {200}
        assert await _settled(r) == 1  # was 201: one per connection ever made


async def test_events_answer_503_when_every_listener_slot_is_taken(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0, learn=False) as (r,):
        r.node._fix_listeners.limit = 2

        def full() -> list[int]:
            with _client(r) as c, ExitStack() as held:
                codes = [_until_ready(c, held) for _ in range(3)]
                with c.stream("GET", "/v1/events") as resp:
                    resp.read()
                    assert "close one" in resp.json()["error"]
            return codes

        assert await trio.to_thread.run_sync(full) == [200, 200, 503]
        assert await _settled(r) == 1  # the two held streams closed: slots free again

        def again() -> int:
            with _client(r) as c:
                return _until_ready(c)

        assert await trio.to_thread.run_sync(again) == 200
