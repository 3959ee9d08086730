"""A peer that reconnects over and over leaves nothing behind on the node it dials.

py-libp2p 0.8.1 serves each inbound connection in a task that waits until the host
stops, holding an inbound slot and ~7 KiB (gossipmind.net.inbound); the tasks
must end with their connections.
"""

from __future__ import annotations

import os

import pytest
import trio

from gossipmind.net import TransportConfig, host
from gossipmind.net.host import open_libp2p_transport

TOPIC = "gossipmind/inbound-test/ops/1"


def config() -> TransportConfig:
    return TransportConfig(seed=os.urandom(32), topic=TOPIC)


async def test_inbound_connection_tasks_end_with_their_connections() -> None:
    with trio.fail_after(60):
        async with open_libp2p_transport(config(), lambda _d: True) as node:
            swarm = node._host.get_network()
            limiter = swarm._inbound_limiter
            async with open_libp2p_transport(config(), lambda _d: True) as peer:
                for _ in range(30):
                    await peer.connect(node.addrs()[0])
                    await peer.disconnect(node.peer_id)
                for _ in range(100):  # the node notices each close
                    if limiter.borrowed_tokens == 0:
                        break
                    await trio.sleep(0.05)
                assert limiter.borrowed_tokens == 0
                await peer.connect(node.addrs()[0])  # and it still accepts
                assert limiter.borrowed_tokens == 1
                assert node.peers() == [peer.peer_id]


async def test_idle_tcp_connects_beyond_the_slots_are_closed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connections that never handshake hold at most INBOUND_SLOTS sockets; the
    rest are closed at once, so they cannot exhaust the node's file descriptors."""
    assert 64 <= host.INBOUND_SLOTS <= 512  # the default: well under a 1024-fd ulimit
    monkeypatch.setattr(host, "INBOUND_SLOTS", 16)  # the same mechanism, cheaper to fill
    with trio.fail_after(60):
        async with open_libp2p_transport(config(), lambda _d: True) as node:
            limiter = node._host.get_network()._inbound_limiter
            port = int(node.addrs()[0].split("/tcp/")[1].split("/")[0])
            idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(40)]
            for _ in range(200):
                if limiter.borrowed_tokens == 16:
                    break
                await trio.sleep(0.05)
            assert limiter.borrowed_tokens == 16

            async def closed_by_node(s: trio.SocketStream) -> bool:
                with trio.move_on_after(0.5):
                    try:
                        while True:  # multistream's greeting, then EOF if refused
                            if await s.receive_some(4096) == b"":
                                return True
                    except trio.BrokenResourceError:
                        return True
                return False

            refused: list[bool] = []

            async def check(s: trio.SocketStream) -> None:
                refused.append(await closed_by_node(s))

            async with trio.open_nursery() as nursery:
                for s in idle:
                    nursery.start_soon(check, s)
            assert sum(refused) == 40 - 16
            for s in idle:
                await s.aclose()
            for _ in range(200):  # the held slots come back when the sockets close
                if limiter.borrowed_tokens == 0:
                    break
                await trio.sleep(0.05)
            assert limiter.borrowed_tokens == 0
            async with open_libp2p_transport(config(), lambda _d: True) as peer:
                await peer.connect(node.addrs()[0])  # a real peer still gets in
                assert node.peers() == [peer.peer_id]
