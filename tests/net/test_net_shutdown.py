"""Stopping real libp2p hosts releases every socket, however they are stopped.

Regression: hosts stopped from a cancelled scope (a node's nursery, the API test
fleet) left their dialed TCP sockets open: py-libp2p's swarm closed its
connections while cancelled, each cancelled close marked its connection closed
with the socket still open, and every later close skipped it. The sockets were
only released by the garbage collector, as ``ResourceWarning: unclosed
<socket.socket ...>`` (a failure at the end of the pytest session).

Each test checks two things: no socket file descriptor of the process is left
open once the hosts are gone (before any garbage collection), and a full
collection afterwards reports nothing through ``sys.unraisablehook``.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import pytest
import trio
from netkit import NET_ID

from gossipmind.core.errors import NetworkError
from gossipmind.net.host import Libp2pTransport, open_libp2p_transport
from gossipmind.net.interface import Stream, TransportConfig

TOPIC = f"gossipmind/{NET_ID.hex()}/ops/1"
HOLD = "/gossipmind/test-hold/1.0.0"

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts sockets through /proc/self/fd"
)


def socket_fds() -> set[int]:
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                out.add(int(name))
        except FileNotFoundError:
            continue  # the directory's own fd, closed by now
    return out


@contextmanager
def no_socket_left() -> Iterator[None]:
    """The block closes every socket it opens, without help from the collector."""
    gc.collect()
    before = socket_fds()
    unraisable: list[str] = []
    previous = sys.unraisablehook

    def hook(u: Any) -> None:
        unraisable.append(f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}")

    sys.unraisablehook = hook
    try:
        yield
        left = socket_fds() - before
        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert not left, f"socket fds left open: {sorted(left)}"
    assert unraisable == []


def config(name: str) -> TransportConfig:
    return TransportConfig(seed=hashlib.sha256(name.encode()).digest(), topic=TOPIC)


@asynccontextmanager
async def hosts(names: list[str]) -> AsyncIterator[list[Libp2pTransport]]:
    async with AsyncExitStack() as stack:
        out = []
        for name in names:
            cm = open_libp2p_transport(config(name), lambda data: True)
            out.append(await stack.enter_async_context(cm))
        yield out


async def hold(stream: Stream) -> None:
    """A stream handler that keeps its stream open until the connection goes."""
    while True:
        await stream.receive()


async def wait_for_peers(ts: list[Libp2pTransport], n: int) -> None:
    with trio.fail_after(20):
        while not all(len(t.peers()) >= n for t in ts[1:]):
            await trio.sleep(0.02)


async def churn(t: Libp2pTransport, other: Libp2pTransport, failures: list[NetworkError]) -> None:
    """Dials and new streams until cancelled, like a node's peer upkeep and sync."""
    while True:
        try:
            await t.connect(other.addrs()[0])
            s = await t.open_stream(other.peer_id, HOLD)
            await s.send(b"x" * 1000)
        except NetworkError as exc:
            failures.append(exc)  # the other side may be going away: try again
        await trio.sleep(0.01)


async def test_hosts_stopped_from_a_cancelled_scope_release_every_socket() -> None:
    with no_socket_left(), trio.fail_after(60):
        for round_ in range(2):
            # The fleet/node pattern: the enclosing scope is cancelled first, then
            # the hosts' contexts unwind inside it.
            with trio.CancelScope() as scope:
                async with (
                    hosts([f"stop{round_}-{i}" for i in range(4)]) as ts,
                    trio.open_nursery() as nursery,
                ):
                    for t in ts:
                        t.set_stream_handler(HOLD, hold)
                    for t in ts[1:]:  # everyone bootstraps to the first host
                        await t.connect(ts[0].addrs()[0])
                    # a simultaneous dial: two connections between one pair
                    nursery.start_soon(ts[1].connect, ts[2].addrs()[0])
                    nursery.start_soon(ts[2].connect, ts[1].addrs()[0])
                    await wait_for_peers(ts, 1)
                    for t in ts[1:]:  # streams open and data in flight
                        s = await t.open_stream(ts[0].peer_id, HOLD)
                        await s.send(b"y" * 10_000)
                    nursery.start_soon(churn, ts[3], ts[1], [])
                    await trio.sleep(0.2)
                    scope.cancel()
                    await trio.sleep_forever()
            assert scope.cancelled_caught


async def test_hosts_stopped_by_leaving_the_block_release_every_socket() -> None:
    with no_socket_left(), trio.fail_after(60):
        async with hosts(["leave-0", "leave-1", "leave-2"]) as ts:
            for t in ts[1:]:
                await t.connect(ts[0].addrs()[0])
            await ts[1].connect(ts[2].addrs()[0])
            await wait_for_peers(ts, 2)
            await ts[1].disconnect(ts[2].peer_id)


async def test_a_half_closed_connection_still_releases_its_socket() -> None:
    """py-libp2p's close, cancelled after it marked the connection closed."""
    with no_socket_left(), trio.fail_after(30):
        async with hosts(["half-0", "half-1"]) as (a, b):
            await b.connect(a.addrs()[0])
            network = b._host.get_network()
            (conn,) = network.get_connections()
            with trio.CancelScope() as scope:
                scope.cancel()
                await conn.close()
            # the state the leak came from: "closed", yet the muxer (and socket) open
            assert conn.is_closed and not conn.muxed_conn.is_closed
            assert network.get_connections() == [conn]


async def test_an_exception_or_return_crossing_a_cancelled_teardown_is_kept() -> None:
    """Regression: libp2p's teardown, cancelled along with the caller, raised a
    Cancelled that replaced the body's exception (or return), and the cancelled
    scope then swallowed it: a failing assertion in a test passed silently."""

    async def leave(how: str) -> str:
        with trio.CancelScope() as scope:
            async with hosts(["keep-0", "keep-1"]) as (a, b):
                await b.connect(a.addrs()[0])
                scope.cancel()
                if how == "raise":
                    raise ValueError("from the body")
                return "returned"
        return "lost"

    with no_socket_left(), trio.fail_after(30):
        with pytest.raises(ValueError, match="from the body"):
            await leave("raise")
        assert await leave("return") == "returned"
