"""A peer sending one malformed pubsub RPC must not take a host down."""

from __future__ import annotations

import os

import trio

from gossipmind.net.host import open_libp2p_transport
from gossipmind.net.interface import TransportConfig

TOPIC = "gossipmind/" + "ab" * 32 + "/ops/1"


def cfg() -> TransportConfig:
    return TransportConfig(seed=os.urandom(32), topic=TOPIC)


async def test_garbage_on_the_meshsub_stream_is_contained() -> None:
    with trio.fail_after(60):
        async with (
            open_libp2p_transport(cfg(), lambda _d: True) as a,
            open_libp2p_transport(cfg(), lambda _d: True) as b,
            open_libp2p_transport(cfg(), lambda _d: True) as attacker,
        ):
            await b.connect(a.addrs()[0])
            await attacker.connect(a.addrs()[0])
            stream = await attacker.open_stream(a.peer_id, "/meshsub/1.1.0")
            await stream.send(b"\xff\xff\xff\xff\x0f not a protobuf RPC")  # one framed junk RPC
            await trio.sleep(0.5)
            # a still serves: b's gossip reaches it (retry: the mesh forms within a heartbeat)
            got = None
            for _ in range(50):
                await b.publish(b"after the junk")
                with trio.move_on_after(0.2):
                    got = await a.messages().receive()
                if got is not None:
                    break
            assert got is not None and got[1] == b"after the junk"
            assert b.peer_id in a.peers()
