"""RPC writes to one pubsub stream never interleave (py-libp2p writes from several tasks)."""

from __future__ import annotations

import weakref

import trio
from libp2p.pubsub.pb import rpc_pb2
from libp2p.utils.varint import decode_varint_from_bytes, encode_uvarint

from gossipmind.net.pubsub import _Pubsub


class ChunkedStream:
    """Writes in small pieces and yields between them, as Yamux does for a large RPC."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        for i in range(0, len(data), 100):
            self.data += data[i : i + 100]
            await trio.sleep(0)


def rpc(tag: int, size: int) -> rpc_pb2.RPC:
    msg = rpc_pb2.Message(data=bytes([tag]) * size, topicIDs=["t"], seqno=bytes([tag]))
    return rpc_pb2.RPC(publish=[msg])


def parse(data: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(data):
        length = decode_varint_from_bytes(data[pos:])
        pos += len(encode_uvarint(length))
        message = rpc_pb2.RPC()
        message.ParseFromString(bytes(data[pos : pos + length]))  # DecodeError if interleaved
        out.append(message.publish[0].data[0])
        pos += length
    return out


async def test_concurrent_rpcs_on_one_stream_are_written_whole() -> None:
    pubsub = _Pubsub.__new__(_Pubsub)  # only write_msg is exercised: no host needed
    pubsub._write_locks = weakref.WeakKeyDictionary()
    stream = ChunkedStream()
    async with trio.open_nursery() as nursery:
        for tag in range(1, 6):
            nursery.start_soon(pubsub.write_msg, stream, rpc(tag, 2000))
    assert sorted(parse(bytes(stream.data))) == [1, 2, 3, 4, 5]
