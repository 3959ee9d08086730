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
