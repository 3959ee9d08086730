"""The buffer of validated gossip waiting for the node is bounded in bytes as well as
in messages (1024 full-size messages would hold 256 MiB): past it, new messages are
dropped and counted, on the libp2p path (`pump_subscription`) and the fake network."""

from __future__ import annotations

from dataclasses import dataclass

import trio
import trio.testing

from gossipmind.net.fake import FakeNetwork
from gossipmind.net.interface import BufferBytes
from gossipmind.net.pubsub import GossipStats, pump_subscription


@dataclass
class Msg:
    from_id: bytes
    data: bytes


class Subscription:
    """py-libp2p's subscription channel, as the pump sees it."""

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[Msg](100)

    async def get(self) -> Msg:
        return await self.recv.receive()


async def test_the_pump_drops_what_would_overflow_the_byte_bound() -> None:
    sub = Subscription()
    send, recv = trio.open_memory_channel[tuple[str, bytes]](1024)
    stats = GossipStats()
    peer = b"\x00\x24\x08\x01\x12\x20" + b"\x07" * 32  # any peer id bytes
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump_subscription, sub, b"me", send, stats, 3000)
        for i in range(5):
            sub.send.send_nowait(Msg(peer, bytes([i]) * 1000))
        await trio.testing.wait_all_tasks_blocked()
        assert stats.delivered == 3 and stats.dropped_buffer_full == 2
        assert [recv.receive_nowait()[1][0] for _ in range(2)] == [0, 1]  # the node reads two
        for i in range(5, 8):
            sub.send.send_nowait(Msg(peer, bytes([i]) * 1000))
        await trio.testing.wait_all_tasks_blocked()
        assert stats.delivered == 5 and stats.dropped_buffer_full == 3  # room for two again
        nursery.cancel_scope.cancel()
    assert [recv.receive_nowait()[1][0] for _ in range(3)] == [2, 5, 6]


async def test_one_message_always_fits_an_empty_buffer() -> None:
    send, _recv = trio.open_memory_channel[int](10)
    held = BufferBytes(100)
    assert held.admit(send, 1000)  # larger than the bound, but alone
    send.send_nowait(1)
    held.sent(1000)
    assert not held.admit(send, 1)


async def test_the_fake_network_bounds_its_buffer_in_bytes() -> None:
    net = FakeNetwork(message_buffer=1024, message_buffer_bytes=10_000)
    async with net.open_transport(peer_id="a") as a, net.open_transport(peer_id="b") as b:
        await a.connect(b.addrs()[0])
        for i in range(20):
            await a.publish(bytes([i]) * 1000)
        got = []
        while True:
            try:
                got.append(b.messages().receive_nowait()[1][0])
            except trio.WouldBlock:
                break
        assert got == list(range(10)) and net.stats.overflowed == 10
