"""The in-memory fake network: gossip, validation, faults, partitions, streams."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from gossipmind.core.errors import NetworkError, SyncError
from gossipmind.net.fake import FakeNetwork, FakeTransport
from gossipmind.net.interface import FrameTooLarge, Stream, StreamEOF, Transport


@asynccontextmanager
async def peers(
    network: FakeNetwork, n: int, validator: object = None
) -> AsyncIterator[list[FakeTransport]]:
    async with AsyncExitStack() as stack:
        out = [
            await stack.enter_async_context(
                network.open_transport(validator, peer_id=f"p{i}")  # type: ignore[arg-type]
            )
            for i in range(n)
        ]
        yield out


def drain(t: Transport) -> list[tuple[str, bytes]]:
    got = []
    while True:
        try:
            got.append(t.messages().receive_nowait())
        except trio.WouldBlock:
            return got


async def line(ts: list[FakeTransport]) -> None:
    for a, b in itertools.pairwise(ts):
        await a.connect(b.addrs()[0])


async def test_gossip_floods_multi_hop_once() -> None:
    net = FakeNetwork()
    async with peers(net, 4) as (a, b, c, d):
        await line([a, b, c, d])
        await c.connect(a.addrs()[0])  # a cycle: a-b-c-a
        assert sorted(b.peers()) == ["p0", "p2"]
        await a.publish(b"hello")
        for t in (b, c, d):
            assert drain(t) == [("p0", b"hello")]
        assert drain(a) == []  # never our own


async def test_connection_events_both_directions() -> None:
    async with peers(FakeNetwork(), 2) as (a, b):
        assert await a.connect(b.addrs()[0]) == "p1"
        assert a.connections().receive_nowait() == "p1"
        assert b.connections().receive_nowait() == "p0"
        assert a.peer_addrs("p1") == b.addrs()
        with pytest.raises(NetworkError):
            await a.connect(a.addrs()[0])
        with pytest.raises(NetworkError):
            await a.connect("/memory/x/p2p/nobody")


async def test_rejected_message_is_not_forwarded() -> None:
    net = FakeNetwork()
    accept_all = None
    strict = lambda data: not data.startswith(b"junk")  # noqa: E731
    async with (
        net.open_transport(accept_all, peer_id="bad") as bad,
        net.open_transport(strict, peer_id="mid") as mid,
        net.open_transport(accept_all, peer_id="far") as far,
    ):
        await line([bad, mid, far])
        await bad.publish(b"junk 1")
        await bad.publish(b"good")
        assert drain(mid) == [("bad", b"good")]
        assert drain(far) == [("bad", b"good")]
        assert net.stats.rejected == 1


async def test_drop_rate_is_seeded_and_close_to_configured() -> None:
    async def run(seed: int) -> list[bytes]:
        net = FakeNetwork(seed=seed, drop=0.3, message_buffer=4096)
        async with peers(net, 2) as (a, b):
            await a.connect(b.addrs()[0])
            for i in range(1000):
                await a.publish(b"%d" % i)
            return [data for _, data in drain(b)]

    first = await run(7)
    assert 600 < len(first) < 800
    assert await run(7) == first
    assert await run(8) != first


async def test_delay_uses_trio_time(autojump_clock: trio.abc.Clock) -> None:
    net = FakeNetwork(delay=(1.0, 2.0))
    async with peers(net, 3) as (a, b, c):
        await line([a, b, c])
        start = trio.current_time()
        await a.publish(b"slow")
        arrivals = {}
        for t in (b, c):
            await t.messages().receive()
            arrivals[t.peer_id] = trio.current_time() - start
        assert 1.0 <= arrivals["p1"] <= 2.0
        assert 2.0 <= arrivals["p2"] <= 4.0  # two hops


async def test_message_in_flight_is_lost_when_link_drops(autojump_clock: trio.abc.Clock) -> None:
    net = FakeNetwork(delay=(1.0, 1.0))
    async with peers(net, 2) as (a, b):
        await a.connect(b.addrs()[0])
        await a.publish(b"x")
        await a.disconnect("p1")
        await trio.sleep(2)
        assert drain(b) == []
        assert net.stats.lost_in_flight == 1


async def test_partition_and_heal() -> None:
    net = FakeNetwork()
    async with peers(net, 4) as ts:
        a, b, c, d = ts
        await line(ts)
        for t in ts:
            drain_conn(t)
        net.partition({"p0", "p1"}, {"p2", "p3"})
        assert b.peers() == ["p0"]
        assert c.peers() == ["p3"]
        with pytest.raises(NetworkError):
            await a.connect(d.addrs()[0])
        await a.publish(b"west")
        await d.publish(b"east")
        assert drain(b) == [("p0", b"west")]
        assert drain(c) == [("p3", b"east")]
        net.heal()
        assert sorted(c.peers()) == ["p1", "p3"]
        assert drain_conn(b) == ["p2"]
        assert drain_conn(c) == ["p1"]
        await a.publish(b"again")
        assert drain(d) == [("p0", b"again")]


def drain_conn(t: Transport) -> list[str]:
    got = []
    while True:
        try:
            got.append(t.connections().receive_nowait())
        except trio.WouldBlock:
            return got


async def test_publish_backpressure_loses_nothing(autojump_clock: trio.abc.Clock) -> None:
    net = FakeNetwork(message_buffer=32)
    async with peers(net, 2) as (a, b), trio.open_nursery() as nursery:
        await a.connect(b.addrs()[0])
        got: list[bytes] = []

        async def reader() -> None:
            async for _, data in b.messages():
                got.append(data)
                await trio.sleep(0.001)  # a slow consumer

        nursery.start_soon(reader)
        for i in range(500):
            await a.publish(b"%d" % i)
        with trio.fail_after(10):
            while len(got) < 500:
                await trio.sleep(0.01)
        assert got == [b"%d" % i for i in range(500)]
        assert net.stats.overflowed == 0
        nursery.cancel_scope.cancel()


async def test_a_peer_that_never_drains_stalls_publish_only_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = FakeNetwork(message_buffer=8)
    async with peers(net, 2) as (a, b):
        await a.connect(b.addrs()[0])
        start = trio.current_time()
        for i in range(20):
            await a.publish(b"%d" % i)
        elapsed = trio.current_time() - start
        assert 5.0 <= elapsed < 6.0  # one stall timeout, then b is skipped
        assert len(drain(b)) == 8
        assert net.stats.overflowed == 12


async def test_batches_from_a_batcher_reach_a_validating_peer() -> None:
    from netkit import NET_ID, identity, make_op

    from gossipmind.net.gossip import GossipBatcher, make_validator

    net = FakeNetwork()
    validator = make_validator(NET_ID)
    raws = [make_op(identity(3), NET_ID, seq).raw for seq in range(1, 301)]
    async with (
        net.open_transport(peer_id="writer") as writer,
        net.open_transport(validator, peer_id="reader") as reader,
        trio.open_nursery() as nursery,
    ):
        await writer.connect(reader.addrs()[0])
        batcher = GossipBatcher(writer.publish, interval=0.01)
        await nursery.start(batcher.run)
        for raw in raws:
            await batcher.put(raw)
        await batcher.flush()
        got = []
        for _, data in drain(reader):
            pairs, carried = validator.decode(data)
            assert carried == len(pairs)
            got.extend(pairs)
        assert [op.raw for op, _ in got] == raws
        assert all(verified for _, verified in got)
        assert validator.stats.signatures_checked == 300
        nursery.cancel_scope.cancel()


# --- streams --------------------------------------------------------------------


async def echo(stream: Stream) -> None:
    while True:
        try:
            frame = await stream.receive()
        except StreamEOF:
            return
        await stream.send(frame)


async def test_stream_frames_eof_and_limits() -> None:
    async with peers(FakeNetwork(max_frame_size=1024), 2) as (a, b):
        b.set_stream_handler("/echo", echo)
        await a.connect(b.addrs()[0])
        s = await a.open_stream("p1", "/echo")
        assert (s.remote_peer, s.protocol) == ("p1", "/echo")
        for frame in (b"", b"x", b"y" * 1024):
            await s.send(frame)
            assert await s.receive() == frame
        with pytest.raises(FrameTooLarge):
            await s.send(b"z" * 1025)
        await s.close()
        with pytest.raises(StreamEOF):
            await s.receive()
        with pytest.raises(NetworkError):
            await a.open_stream("p1", "/unknown")


async def test_stream_breaks_when_link_drops() -> None:
    async with peers(FakeNetwork(), 2) as (a, b):
        b.set_stream_handler("/echo", echo)
        await a.connect(b.addrs()[0])
        s = await a.open_stream("p1", "/echo")
        await s.send(b"1")
        assert await s.receive() == b"1"
        await s.send(b"lost")
        await a.disconnect("p1")
        with pytest.raises(StreamEOF):  # buffered frame lost; reads as an end
            await s.receive()
        with pytest.raises(NetworkError):
            await s.send(b"2")
        with pytest.raises(NetworkError):
            await a.open_stream("p1", "/echo")


async def test_handler_protocol_error_resets_stream() -> None:
    async def picky(stream: Stream) -> None:
        await stream.receive()
        raise SyncError("malformed")

    async with peers(FakeNetwork(), 2) as (a, b):
        b.set_stream_handler("/picky", picky)
        await a.connect(b.addrs()[0])
        s = await a.open_stream("p1", "/picky")
        await s.send(b"?")
        with pytest.raises(StreamEOF):  # reset by the handler
            await s.receive()
        await s.reset()
        with pytest.raises(NetworkError) as info:
            await s.receive()
        assert not isinstance(info.value, StreamEOF)


async def test_connection_limit() -> None:
    async with peers(FakeNetwork(max_connections=2), 4) as (hub, *others):
        await others[0].connect(hub.addrs()[0])
        await others[1].connect(hub.addrs()[0])
        with pytest.raises(NetworkError):
            await others[2].connect(hub.addrs()[0])
        assert len(hub.peers()) == 2
