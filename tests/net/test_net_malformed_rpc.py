"""A peer sending one malformed pubsub RPC must not take a host down."""

from __future__ import annotations

import os

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

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


@pytest.mark.parametrize(
    "key", [b"\x08\x01\x12\x03abc", b"\xff\xff\xff", b"\x08\x00\x12\x02\x00\x00"]
)
async def test_a_published_message_with_an_unreadable_key_is_dropped(key: bytes) -> None:
    """py-libp2p's signature validator re-raises when a message's `key` cannot be
    deserialized, inside a service task: one such message (its `from` a peer id
    without an embedded key) took the host down. No membership was needed."""
    with trio.fail_after(60):
        async with (
            open_libp2p_transport(cfg(), lambda _d: True) as a,
            open_libp2p_transport(cfg(), lambda _d: True) as b,
            open_libp2p_transport(cfg(), lambda _d: True) as attacker,
        ):
            await b.connect(a.addrs()[0])
            await attacker.connect(a.addrs()[0])
            qm = ID.from_base58("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N").to_bytes()
            msg = rpc_pb2.Message(
                from_id=qm, data=b"x", seqno=os.urandom(8), topicIDs=[TOPIC],
                signature=b"s" * 64, key=key,
            )  # fmt: skip
            stream = await attacker.open_stream(a.peer_id, "/meshsub/1.1.0")
            await stream.send(rpc_pb2.RPC(publish=[msg]).SerializeToString())
            await trio.sleep(0.5)
            got = None
            for _ in range(50):  # a still serves: b's gossip reaches it
                await b.publish(b"after the bad key")
                with trio.move_on_after(0.2):
                    got = await a.messages().receive()
                if got is not None:
                    break
            assert got is not None and got[1] == b"after the bad key"
