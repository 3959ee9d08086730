"""Regression tests for problems below the testnet, found with the testnet.

py-libp2p 0.8.1's swarm takes an "inbound slot" (``Swarm._inbound_limiter``,
``max_connections - min_connections`` = 12 slots with our settings) for every
inbound connection and, after a successful upgrade, holds it until the *swarm*
stops (``_do_handle_inbound_connection`` ends in ``await
self.manager.wait_finished()``), not until the connection closes. A node therefore
accepts 12 inbound connections in its whole life; after that every dial to it
fails, so restarted peers, late joiners and healed partitions can no longer reach
it. ``gossipmind.net.host`` now gives the limiter a capacity that the swarm's
``max_connections`` check (at registration) already bounds.

Its dialer also refuses, for 60 s, to dial a peer whose last dial failed (a
"negative cache"), so a node restarted in seconds stayed unreachable for a
minute; ``Libp2pTransport.connect`` clears that entry before each dial.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from gossipmind.core.errors import NetworkError
from gossipmind.net import TransportConfig
from gossipmind.testnet import Testnet

pytestmark = pytest.mark.slow


def test_a_node_accepts_a_thirteenth_inbound_connection(run_dir: Path) -> None:
    tn = Testnet(run_dir)
    tn.up(1, 0, status_every=0.5)
    node = tn.node("node-0")
    config = TransportConfig(seed=os.urandom(32), topic=f"gossipmind/{tn.state().network}/ops/1")

    async def dial_13_times() -> list[int]:
        from gossipmind.net.host import open_libp2p_transport

        refused = []
        for i in range(1, 14):  # one after the other: never more than one at a time
            async with open_libp2p_transport(config, lambda _data: True) as peer:
                try:
                    await peer.connect(node.addr)
                except NetworkError:
                    refused.append(i)
        return refused

    refused = trio.run(dial_13_times)
    if refused[:1] == [1]:
        pytest.fail(f"the node refused its first connection: {refused}")  # not the known bug
    assert not refused, f"inbound connections refused: {refused}"


async def test_a_peer_back_within_the_minute_is_dialled_again() -> None:
    """py-libp2p refuses for 60 s to dial a peer whose last dial failed (its negative
    dial cache): a node restarted in 5 s stayed unreachable for a minute. Every
    explicit dial of ours is a fresh try (``Libp2pTransport.connect``)."""
    from gossipmind.net.host import open_libp2p_transport
    from gossipmind.testnet.procs import free_ports

    (port,) = free_ports(1)
    topic = "gossipmind/known-issues/ops/1"
    seed_b = os.urandom(32)
    back = TransportConfig(seed=seed_b, topic=topic, listen=f"/ip4/127.0.0.1/tcp/{port}")

    def accept(_data: bytes) -> bool:
        return True

    async with open_libp2p_transport(TransportConfig(os.urandom(32), topic), accept) as a:
        async with open_libp2p_transport(back, accept) as b:
            addr = b.addrs()[0]
            assert await a.connect(addr) == b.peer_id
            await a.disconnect(b.peer_id)
        with pytest.raises(NetworkError):  # b is down: the failure enters the cache
            await a.connect(addr)
        async with open_libp2p_transport(back, accept) as b_again:  # back on its port
            assert b_again.addrs()[0] == addr
            with trio.fail_after(10):  # not 60 s: the dial is a fresh try
                assert await a.connect(addr) == b_again.peer_id
            assert b_again.peer_id in a.peers()
