"""A long-running node keeps no per-message history in py-libp2p's router.

py-libp2p appends the time of every message the router publishes, forwards or
delivers to ``GossipSub.recent_message_deliveries`` and prunes it only in its
adaptive-gossip health check, which gossipmind turns off: a float per message
for the host's life, 32 bytes each (found by a soak test of a testnet).
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack

import trio

from gossipmind.net.host import Libp2pTransport, open_libp2p_transport
from gossipmind.net.interface import TransportConfig
from gossipmind.net.mesh import mesh_peers

TOPIC = "gossipmind/pubsub-history-test/ops/1"
MESSAGES = 60


def history(t: Libp2pTransport) -> int:
    """Entries the router holds in its delivery history, over every topic."""
    return sum(len(v) for v in t._pubsub.router.recent_message_deliveries.values())


async def test_router_keeps_no_history_of_the_messages_it_handles() -> None:
    """Publisher, forwarder and receiver in a line: after 60 messages none of the
    three routers holds an entry per message (it held 60 each)."""
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            a, b, c = [
                await stack.enter_async_context(
                    open_libp2p_transport(
                        TransportConfig(seed=os.urandom(32), topic=TOPIC), lambda _d: True
                    )
                )
                for _ in range(3)
            ]
            await a.connect(b.addrs()[0])
            await b.connect(c.addrs()[0])
            while not (mesh_peers(a) and len(mesh_peers(b)) == 2 and mesh_peers(c)):
                await trio.sleep(0.05)
            received = 0
            for i in range(MESSAGES):
                await a.publish(b"message %d" % i)
                while True:  # drain what has arrived so far
                    try:
                        c.messages().receive_nowait()
                    except trio.WouldBlock:
                        break
                    received += 1
            while received < MESSAGES:  # every message crossed b: forwarded, delivered
                await c.messages().receive()
                received += 1
            assert b.stats.delivered >= MESSAGES
            assert [history(t) for t in (a, b, c)] == [0, 0, 0]
