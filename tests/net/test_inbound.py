"""A peer that reconnects over and over leaves nothing behind on the node it dials.

py-libp2p 0.8.1 serves each inbound connection in a task that waits until the host
stops, holding an inbound slot and ~7 KiB (gossipmind.net.inbound); the tasks
must end with their connections.
"""

from __future__ import annotations

import os

import trio

from gossipmind.net import TransportConfig
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
