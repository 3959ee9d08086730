"""The libp2p transport, for real: TCP on 127.0.0.1, several hosts in one process.

Every test is bounded by ``trio.fail_after``; hosts are closed by their context
managers (the test fails if shutdown hangs).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import types
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from netkit import GENESIS, NET_ID, OTHER_GENESIS, identity, make_op

from gossipmind.core.errors import NetworkError, SyncError
from gossipmind.net import pubsub as pubsub_module
from gossipmind.net.gossip import encode_batch, make_validator
from gossipmind.net.host import (
    Libp2pTransport,
    configure_logging,
    expand_unspecified,
    local_ips,
    open_libp2p_transport,
    peer_id_from_seed,
)
from gossipmind.net.interface import (
    FrameTooLarge,
    Stream,
    StreamEOF,
    StreamHandler,
    TransportConfig,
    TruncatedFrame,
)

TOPIC = f"gossipmind/{NET_ID.hex()}/ops/1"
ECHO = "/gossipmind/test-echo/1.0.0"
ACCEPT_ALL: Callable[[bytes], bool] = lambda data: True  # noqa: E731


def seed(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def config(name: str, **overrides: Any) -> TransportConfig:
    return TransportConfig(seed=seed(name), topic=TOPIC, **overrides)


@asynccontextmanager
async def hosts(
    names: list[str],
    validators: list[Callable[[bytes], bool]] | None = None,
    **overrides: Any,
) -> AsyncIterator[list[Libp2pTransport]]:
    async with AsyncExitStack() as stack:
        out = []
        for i, name in enumerate(names):
            validator = validators[i] if validators else make_validator(NET_ID)
            out.append(
                await stack.enter_async_context(
                    open_libp2p_transport(config(name, **overrides), validator)
                )
            )
        yield out


async def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def wait_mesh(ts: list[Libp2pTransport]) -> None:
    """Until every host has gossipsub peers on the topic (subscriptions exchanged)."""

    def ready() -> bool:
        return all(t._pubsub.peer_topics.get(TOPIC) for t in ts)

    await wait_for(ready)


def batch(seq: int, n: int = 5, *, size: int = 0) -> bytes:
    return encode_batch([make_op(identity(1), NET_ID, seq + i, size=size).raw for i in range(n)])


# --- identity and addresses ---------------------------------------------------


async def test_peer_id_is_stable_from_seed() -> None:
    threads = threading.active_count()
    with trio.fail_after(20):
        for _ in range(2):
            async with hosts(["stable"]) as (t,):
                assert t.peer_id == peer_id_from_seed(seed("stable"))
                assert t.addrs()
                assert all(a.startswith("/ip4/127.0.0.1/tcp/") for a in t.addrs())
                assert all(a.endswith(f"/p2p/{t.peer_id}") for a in t.addrs())
        assert peer_id_from_seed(seed("other")) != peer_id_from_seed(seed("stable"))
    assert threading.active_count() == threads  # py-libp2p's sweeper thread was stopped


async def test_bad_listen_addresses_raise_network_error() -> None:
    with trio.fail_after(20):
        with pytest.raises(NetworkError):
            async with hosts(["l1"], listen="/ip4/127.0.0.1/udp/0/quic-v1"):
                pass
        with pytest.raises(NetworkError):
            async with hosts(["l1"], listen="nonsense"):
                pass
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        try:
            port = busy.getsockname()[1]
            with pytest.raises(NetworkError, match="could not listen"):
                async with hosts(["l1"], listen=f"/ip4/127.0.0.1/tcp/{port}"):
                    pass
        finally:
            busy.close()


async def test_connect_errors_are_network_errors() -> None:
    with trio.fail_after(30):
        async with hosts(["c1", "c2"]) as (a, b):
            dead = socket.socket()
            dead.bind(("127.0.0.1", 0))
            port = dead.getsockname()[1]
            dead.close()  # nobody listens there now
            for bad in (
                "garbage",
                "/ip4/127.0.0.1/tcp/1",
                f"/ip4/127.0.0.1/tcp/{port}/p2p/{b.peer_id}",
                a.addrs()[0],  # ourselves
            ):
                with pytest.raises(NetworkError):
                    await a.connect(bad)
            with pytest.raises(NetworkError):
                await a.open_stream(b.peer_id, ECHO)  # not connected
            with pytest.raises(NetworkError):
                a.peer_addrs("not-a-peer-id")
            assert a.peers() == []


async def test_a_peer_back_at_another_address_is_dialled_there() -> None:
    """A peer restarted on another port (the default listen port is ephemeral):
    py-libp2p dialled the first address its peerstore held, the dead one, every
    time, and each failed dial kept it alive. A dial now goes where it was asked,
    and a dead address tried first does not shadow the live one afterwards."""
    with trio.fail_after(60):
        async with hosts(["m1"]) as (a,):
            async with hosts(["m2"]) as (b,):
                old = b.addrs()[0]
                await a.connect(old)
            await wait_for(lambda: not a.peers())
            async with hosts(["m2"], listen=f"/ip4/127.0.0.1/tcp/{free_port_but(old)}") as (b,):
                new = b.addrs()[0]
                assert new != old and b.peer_id == peer_of(old)
                with pytest.raises(NetworkError):
                    await a.connect(old)  # nobody there now
                assert await a.connect(new) == b.peer_id
                assert a.peers() == [b.peer_id]


async def test_a_peer_back_at_another_address_is_known_there_when_it_dials_in() -> None:
    """A peer that dialled us, restarted on another port and dialled us again kept
    its old address in our peerstore: py-libp2p skips identify for a peer whose
    protocols it has cached, so peer exchange shared the dead address (a node moved
    to another port stayed unreachable from every peer but its bootstrap)."""
    with trio.fail_after(60):
        async with hosts(["m1"]) as (a,):
            async with hosts(["m2"]) as (b,):
                old = b.addrs()[0]
                await b.connect(a.addrs()[0])
                await wait_for(lambda: a.peer_addrs(b.peer_id) == [old])
            await wait_for(lambda: not a.peers())
            async with hosts(["m2"], listen=f"/ip4/127.0.0.1/tcp/{free_port_but(old)}") as (b,):
                new = b.addrs()[0]
                await b.connect(a.addrs()[0])
                await wait_for(lambda: a.peer_addrs(b.peer_id) == [new])


async def test_a_peer_back_at_another_address_before_its_old_link_died_is_known_there() -> None:
    """A peer back at another address (another IP, a restart on another port)
    while its old connection still looked open here (a link that died silently
    is found dead only by a timeout): its new connection was not identified
    (py-libp2p had its protocols cached), nor was the one left once the old one
    closed, so the dead address was the only one this node knew and shared."""
    with trio.fail_after(60):
        async with hosts(["m1"]) as (a,), hosts(["m2"]) as (b1,):
            old = b1.addrs()[0]
            await b1.connect(a.addrs()[0])
            await wait_for(lambda: a.peer_addrs(b1.peer_id) == [old])
            port = free_port_but(old)
            async with hosts(["m2"], listen=f"/ip4/127.0.0.1/tcp/{port}") as (b2,):
                new = b2.addrs()[0]
                await b2.connect(a.addrs()[0])  # the same peer id, from elsewhere
                await b1.disconnect(a.peer_id)  # the old link is found dead at last
                await wait_for(lambda: new in a.peer_addrs(b2.peer_id))


async def test_dialling_a_connected_peer_leaves_its_addresses_alone() -> None:
    """A node dialled a connected peer at its old address (a bootstrap entry, in a
    round that began before the peer came back at another port): py-libp2p added
    the dead address to the peerstore and reported success, and peer exchange
    shared it from then on."""
    with trio.fail_after(60):
        async with hosts(["m1", "m2"]) as (a, b):
            live = b.addrs()[0]
            await b.connect(a.addrs()[0])
            await wait_for(lambda: a.peer_addrs(b.peer_id) == [live])
            dead = f"/ip4/127.0.0.1/tcp/{free_port_but(live)}/p2p/{b.peer_id}"
            assert await a.connect(dead) == b.peer_id  # connected already: nothing to dial
            assert a.peer_addrs(b.peer_id) == [live]


def peer_of(addr: str) -> str:
    return addr.rsplit("/p2p/", 1)[1]


def free_port_but(addr: str) -> int:
    """A free TCP port on 127.0.0.1 other than the one of ``addr``."""
    taken = int(addr.split("/")[4])
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port != taken:
            return port
    raise AssertionError("no free port")


async def test_connections_are_announced_and_addresses_learned() -> None:
    with trio.fail_after(30):
        async with hosts(["e1", "e2"]) as (a, b):
            assert await a.connect(b.addrs()[0]) == b.peer_id
            with trio.fail_after(5):
                assert await a.connections().receive() == b.peer_id
                assert await b.connections().receive() == a.peer_id
            assert a.peers() == [b.peer_id]
            assert b.addrs()[0] in a.peer_addrs(b.peer_id)
            # the inbound side learns the dialer's listen address (identify)
            await wait_for(lambda: a.addrs()[0] in b.peer_addrs(a.peer_id))
            await a.disconnect(b.peer_id)
            await wait_for(lambda: not b.peers() and not a.peers())
            await b.connect(a.addrs()[0])  # a reconnection is a new connection
            with trio.fail_after(5):
                assert await a.connections().receive() == b.peer_id
                assert await b.connections().receive() == a.peer_id


async def test_simultaneous_dials_announce_each_peer_once() -> None:
    with trio.fail_after(30):
        async with hosts(["sim1", "sim2"]) as (a, b):
            b.set_stream_handler(ECHO, echo)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.connect, b.addrs()[0])
                nursery.start_soon(b.connect, a.addrs()[0])
            await trio.sleep(0.3)
            for t, other in ((a, b), (b, a)):
                assert t.peers() == [other.peer_id]
                assert t.connections().receive_nowait() == other.peer_id
                with pytest.raises(trio.WouldBlock):
                    t.connections().receive_nowait()
            s = await a.open_stream(b.peer_id, ECHO)
            await s.send(b"one of two connections")
            assert await s.receive() == b"one of two connections"


# --- gossip ---------------------------------------------------------------------


async def test_batch_reaches_every_host_once() -> None:
    names = [f"g{i}" for i in range(5)]
    with trio.fail_after(40):
        async with hosts(names) as ts:
            # a line plus a chord: not everyone is connected to the publisher
            for x, y in [(0, 1), (1, 2), (2, 3), (3, 4), (0, 2)]:
                await ts[x].connect(ts[y].addrs()[0])
            await wait_mesh(ts)
            message = batch(1)
            sent_at = trio.current_time()
            await ts[0].publish(message)
            latencies = []
            for t in ts[1:]:
                with trio.fail_after(10):
                    origin, data = await t.messages().receive()
                latencies.append(trio.current_time() - sent_at)
                assert (origin, data) == (ts[0].peer_id, message)
            await trio.sleep(1.5)  # a heartbeat or so: no duplicates arrive late
            for t in ts:
                with pytest.raises(trio.WouldBlock):
                    t.messages().receive_nowait()
            print(f"propagation to 4 hosts: max {max(latencies) * 1000:.1f} ms")


async def test_junk_is_rejected_and_not_propagated() -> None:
    # bad -- mid -- far: "bad" accepts anything of its own; mid and far validate.
    mid_v = make_validator(NET_ID)
    far_v = make_validator(NET_ID)
    with trio.fail_after(40):
        async with hosts(["bad", "mid", "far"], [ACCEPT_ALL, mid_v, far_v]) as (bad, mid, far):
            await bad.connect(mid.addrs()[0])
            await mid.connect(far.addrs()[0])
            await wait_mesh([bad, mid, far])
            good_op = make_op(identity(2), NET_ID, 1)
            forged = good_op.raw[:-1] + bytes([good_op.raw[-1] ^ 1])
            junk = [
                b"\x00garbage\xff",
                encode_batch([forged]),
                encode_batch([make_op(identity(2), OTHER_GENESIS.id, 1).raw]),
                encode_batch([OTHER_GENESIS.raw]),
            ]
            for message in junk:
                await bad.publish(message)
            good = encode_batch([GENESIS.raw, good_op.raw])
            await bad.publish(good)
            for t in (mid, far):
                with trio.fail_after(10):
                    assert await t.messages().receive() == (bad.peer_id, good)
            await trio.sleep(0.5)
            assert mid_v.stats.rejected == {"encoding": 1, "signature": 1, "wrong_network": 2}
            assert far_v.stats.rejected_total == 0  # junk never reached it
            assert far_v.stats.accepted == 1
            for t in (mid, far):
                with pytest.raises(trio.WouldBlock):
                    t.messages().receive_nowait()


async def test_publish_backpressure_loses_nothing() -> None:
    count = 500
    with trio.fail_after(50):
        async with hosts(["bp0", "bp1", "bp2"]) as ts, trio.open_nursery() as nursery:
            await ts[0].connect(ts[1].addrs()[0])
            await ts[0].connect(ts[2].addrs()[0])
            await wait_mesh(ts)
            received: dict[str, list[bytes]] = {t.peer_id: [] for t in ts[1:]}

            async def drain(t: Libp2pTransport) -> None:
                async for _, data in t.messages():
                    received[t.peer_id].append(data)

            for t in ts[1:]:
                nursery.start_soon(drain, t)
            messages = [batch(1 + 3 * i, n=3) for i in range(count)]
            start = trio.current_time()
            for m in messages:
                await ts[0].publish(m)
            published = trio.current_time()
            await wait_for(lambda: all(len(r) == count for r in received.values()), 30)
            done = trio.current_time()
            for r in received.values():
                assert r == messages  # nothing lost, in order (one link each)
            print(
                f"{count} msgs: publish {count / (published - start):.0f} msg/s, "
                f"all delivered {count / (done - start):.0f} msg/s, "
                f"back-pressure waits {ts[0].stats.backpressure_waits}"
            )
            nursery.cancel_scope.cancel()


async def test_oversized_publish_is_refused() -> None:
    with trio.fail_after(20):
        async with hosts(["big"]) as (t,):
            with pytest.raises(NetworkError):
                await t.publish(b"x" * (256 * 1024 + 1))


# --- streams --------------------------------------------------------------------


async def echo(stream: Stream) -> None:
    while True:
        try:
            frame = await stream.receive()
        except StreamEOF:
            return
        await stream.send(frame)


async def test_stream_frames_round_trip() -> None:
    with trio.fail_after(30):
        async with hosts(["s1", "s2"]) as (a, b):
            b.set_stream_handler(ECHO, echo)
            await a.connect(b.addrs()[0])
            s = await a.open_stream(b.peer_id, ECHO)
            assert (s.remote_peer, s.protocol) == (b.peer_id, ECHO)
            frames = [b"", b"a", bytes(range(256)) * 40, b"\x5a" * (512 * 1024)]
            for frame in frames:
                await s.send(frame)
                assert await s.receive() == frame
            # pipelined: several frames in flight at once
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_all, s, frames)
                for frame in frames:
                    assert await s.receive() == frame
            with pytest.raises(FrameTooLarge):
                await s.send(b"x" * (1024 * 1024 + 1))
            await s.close()
            with pytest.raises(StreamEOF):
                await s.receive()


async def _send_all(s: Stream, frames: list[bytes]) -> None:
    for frame in frames:
        await s.send(frame)


def recorder(outcome: list[BaseException]) -> StreamHandler:
    """A handler that reads one frame and records the error it met (re-raised)."""

    async def record(stream: Stream) -> None:
        try:
            await stream.receive()
        except NetworkError as exc:
            outcome.append(exc)
            raise

    return record


async def test_oversize_and_truncated_frames_from_peer() -> None:
    outcome: list[BaseException] = []
    record = recorder(outcome)

    with trio.fail_after(30):
        async with (
            hosts(["big-sender"], max_frame_size=4 * 1024 * 1024) as (a,),
            hosts(["small-receiver"]) as (b,),
        ):
            b.set_stream_handler(ECHO, record)
            await a.connect(b.addrs()[0])
            s = await a.open_stream(b.peer_id, ECHO)
            with pytest.raises(NetworkError):  # fine for a, too big for b: b resets
                await s.send(b"y" * (1024 * 1024 + 1))
            await wait_for(lambda: len(outcome) == 1)
            assert isinstance(outcome[0], FrameTooLarge)

            s = await a.open_stream(b.peer_id, ECHO)
            await s.send_unframed(b"\xe8\x07" + b"z" * 10)  # type: ignore[attr-defined]
            await s.close()  # 1000 bytes announced, 10 sent
            await wait_for(lambda: len(outcome) == 2)
            assert isinstance(outcome[1], TruncatedFrame)
            assert "truncated" in str(outcome[1])


@pytest.mark.parametrize(
    "prefix",
    [
        b"\x80" * 10 + b"\x01",  # longer than 10 bytes (sync.md §1)
        b"\xff" * 9 + b"\x7f",  # 10 bytes, but over 64 bits
    ],
)
async def test_a_bad_length_prefix_is_an_oversized_frame_not_a_lost_link(prefix: bytes) -> None:
    # Before the fix both came out as a plain NetworkError, which the syncer counts
    # as `network` (a lost link: not penalized), though no link loss can produce them.
    outcome: list[BaseException] = []
    record = recorder(outcome)

    with trio.fail_after(30):
        async with hosts(["prefix-sender", "prefix-receiver"]) as (a, b):
            b.set_stream_handler(ECHO, record)
            await a.connect(b.addrs()[0])
            s = await a.open_stream(b.peer_id, ECHO)
            await s.send_unframed(prefix)  # type: ignore[attr-defined]
            await wait_for(lambda: len(outcome) == 1)
            assert isinstance(outcome[0], FrameTooLarge)


async def test_handler_errors_reset_only_that_stream() -> None:
    async def picky(stream: Stream) -> None:
        await stream.receive()
        raise SyncError("out of protocol")

    with trio.fail_after(30):
        async with hosts(["h1", "h2"]) as (a, b):
            b.set_stream_handler("/picky/1", picky)
            b.set_stream_handler(ECHO, echo)
            await a.connect(b.addrs()[0])
            s = await a.open_stream(b.peer_id, "/picky/1")
            await s.send(b"?")
            with pytest.raises(StreamEOF), trio.fail_after(5):  # a reset reads as an end
                await s.receive()
            e = await a.open_stream(b.peer_id, ECHO)  # the connection survived
            await e.send(b"still here")
            assert await e.receive() == b"still here"
            with pytest.raises(NetworkError):
                await a.open_stream(b.peer_id, "/nobody/1")


# --- security and limits ----------------------------------------------------------


async def test_plaintext_dialer_is_refused() -> None:
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.exceptions import BaseLibp2pError
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

    key_pair = create_new_key_pair(seed("plaintext"))
    listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    intruder = new_host(
        key_pair=key_pair,
        sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)},
        listen_addrs=[listen],
    )
    with trio.fail_after(30):
        async with hosts(["noise-only"]) as (t,), intruder.run([listen]):
            with pytest.raises(BaseLibp2pError):  # refused during the handshake
                await intruder.connect(info_from_p2p_addr(multiaddr.Multiaddr(t.addrs()[0])))
            assert t.peers() == []
            assert intruder.get_connected_peers() == []


async def test_connection_count_is_capped() -> None:
    names = ["cap-hub", "cap1", "cap2", "cap3"]
    with trio.fail_after(40):
        async with hosts(names[:1], max_connections=2) as (hub,), hosts(names[1:]) as others:
            for t in others[:2]:
                await t.connect(hub.addrs()[0])
            await wait_for(lambda: len(hub.peers()) == 2)
            with contextlib.suppress(NetworkError):  # refused outright, or ...
                await others[2].connect(hub.addrs()[0])
            await trio.sleep(0.5)  # ... accepted by TCP then closed by the hub
            assert len(hub.peers()) <= 2
            await wait_for(lambda: hub.peer_id not in others[2].peers())
            # and the hub itself will not dial past its cap
            with pytest.raises(NetworkError):
                await hub.connect(others[2].addrs()[0])


async def test_libp2p_logs_are_silenced(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    before = list(logging.getLogger().handlers)  # an earlier test's (a CLI run's) stay
    with trio.fail_after(30):
        async with hosts(["log1", "log2"]) as (a, b):
            await a.connect(b.addrs()[0])
            await wait_mesh([a, b])
            await a.disconnect(b.peer_id)
            await wait_for(lambda: not b.peers())
    leaked = [
        r for r in caplog.records if "/libp2p/" in r.pathname and r.levelno < logging.CRITICAL
    ]
    assert leaked == []
    added = [h for h in logging.getLogger().handlers if h not in before]
    assert not [h for h in added if type(h) is logging.StreamHandler]  # no basicConfig()


async def test_debug_switch_lets_libp2p_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    try:
        with trio.fail_after(30):
            async with hosts(["dbg1", "dbg2"], debug=True) as (a, b):
                await a.connect(b.addrs()[0])
        assert any(r.name.startswith("libp2p") for r in caplog.records)
    finally:
        configure_logging(False)


async def test_new_connections_are_ready_for_streams_on_both_sides() -> None:
    """What the node does: open a sync stream as soon as a connection is announced."""
    with trio.fail_after(30):
        async with hosts(["r1", "r2"]) as (a, b), trio.open_nursery() as nursery:
            replies: list[tuple[str, bytes]] = []
            for t in (a, b):
                t.set_stream_handler(ECHO, echo)

            async def on_connect(t: Libp2pTransport) -> None:
                peer = await t.connections().receive()
                s = await t.open_stream(peer, ECHO)
                await s.send(t.peer_id.encode())
                replies.append((t.peer_id, await s.receive()))
                await s.close()

            nursery.start_soon(on_connect, a)
            nursery.start_soon(on_connect, b)
            await a.connect(b.addrs()[0])
            await wait_for(lambda: len(replies) == 2)
            assert sorted(replies) == sorted((t.peer_id, t.peer_id.encode()) for t in (a, b))


async def test_errors_from_the_body_come_out_unwrapped() -> None:
    with trio.fail_after(20):
        with pytest.raises(SyncError, match="node bug"):
            async with hosts(["unwrap"]):
                raise SyncError("node bug")
        with pytest.raises(KeyboardInterrupt):  # what Ctrl-C looks like to the node
            async with hosts(["unwrap"]):
                raise KeyboardInterrupt


async def test_closing_a_host_while_gossip_flows() -> None:
    """Regression: pubsub must not receive after its service stopped (RuntimeError)."""
    with trio.fail_after(40):
        async with hosts(["flow1", "flow2"]) as senders, trio.open_nursery() as nursery:
            await senders[0].connect(senders[1].addrs()[0])

            async def flood(t: Libp2pTransport) -> None:
                for i in range(100_000):
                    await t.publish(batch(1 + i % 50, n=1))

            for t in senders:
                nursery.start_soon(flood, t)
            for round_ in range(3):
                async with hosts([f"flow-sink{round_}"]) as (sink,):
                    for t in senders:
                        await sink.connect(t.addrs()[0])
                    with trio.fail_after(10):
                        await sink.messages().receive()
                    await trio.sleep(0.2)
                # leaving the block closed the sink while both senders gossip to it
            nursery.cancel_scope.cancel()


def test_wildcard_addresses_are_expanded_and_never_advertised() -> None:
    ips = {"ip4": ["127.0.0.1", "10.1.2.3"], "ip6": ["::1"]}
    assert expand_unspecified("/ip4/0.0.0.0/tcp/7", ips) == [
        "/ip4/127.0.0.1/tcp/7",
        "/ip4/10.1.2.3/tcp/7",
    ]
    assert expand_unspecified("/ip6/::/tcp/7/p2p/x", ips) == ["/ip6/::1/tcp/7/p2p/x"]
    assert expand_unspecified("/ip4/127.0.0.1/tcp/7", ips) == ["/ip4/127.0.0.1/tcp/7"]
    assert "127.0.0.1" in local_ips()["ip4"]


async def test_announce_replaces_the_advertised_address() -> None:
    with trio.fail_after(20):
        announce = ("/ip4/127.0.0.1/tcp/4242",)
        async with hosts(["announce"], announce=announce) as (t,):
            assert t.addrs() == [f"/ip4/127.0.0.1/tcp/4242/p2p/{t.peer_id}"]
        with pytest.raises(NetworkError):
            async with hosts(["announce"], announce=("/dns4/example.org",)):
                pass


async def _window_updates(monkeypatch: pytest.MonkeyPatch, setting: str | None) -> int:
    """Window updates sent while ~3 MB of 1 kB frames are echoed back (both ways)."""
    from libp2p.stream_muxer.yamux.yamux import YamuxStream

    if setting is None:
        monkeypatch.delenv("PY_YAMUX_RELEASE_ON_READ", raising=False)
    else:
        monkeypatch.setenv("PY_YAMUX_RELEASE_ON_READ", setting)
    updates: list[int] = []
    original = YamuxStream.send_window_update

    async def counted(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        updates.append(increment)
        await original(self, increment, skip_lock=skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counted)
    frames = [bytes([i % 251]) * 1000 for i in range(3000)]
    with trio.fail_after(60):
        async with hosts(["w1", "w2"]) as (a, b):
            b.set_stream_handler(ECHO, echo)
            await a.connect(b.addrs()[0])
            s = await a.open_stream(b.peer_id, ECHO)
            updates.clear()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_all, s, frames)
                for frame in frames:
                    assert await s.receive() == frame
            await s.close()
    monkeypatch.setattr(YamuxStream, "send_window_update", original)
    return len(updates)


async def test_yamux_window_updates_are_batched(monkeypatch: pytest.MonkeyPatch) -> None:
    """py-libp2p sends a window update after every read unless told otherwise
    (``PY_YAMUX_RELEASE_ON_READ=0``); the adapter tells it, and several windows'
    worth of small frames still flow both ways without a stall."""
    ours = await _window_updates(monkeypatch, None)
    assert os.environ["PY_YAMUX_RELEASE_ON_READ"] == "0"
    per_read = await _window_updates(monkeypatch, "1")
    assert 0 < ours < 0.75 * per_read


async def test_an_operators_yamux_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PY_YAMUX_RELEASE_ON_READ", "1")
    with trio.fail_after(30):
        async with hosts(["w3"]):
            assert os.environ["PY_YAMUX_RELEASE_ON_READ"] == "1"


async def test_a_sender_restarted_after_a_burst_is_not_taken_for_an_equivocator() -> None:
    """A message id is sender + seqno. The seqno counter started at the Unix time
    in *seconds*, so a node that had published more messages than seconds had
    passed, then restarted, reused its own ids: its peers (which keep each id's
    digest for 240 s) dropped the new messages as repeats or refused them as
    equivocation. It starts at the time in nanoseconds now, as go-libp2p's does."""
    with trio.fail_after(60):
        async with hosts(["sq1"], validators=[ACCEPT_ALL]) as (a,):
            received = a.messages()
            async with hosts(["sq2"], validators=[ACCEPT_ALL]) as (b,):
                await b.connect(a.addrs()[0])
                await wait_mesh([a, b])
                for i in range(30):
                    await b.publish(b"before %d" % i)
                with trio.fail_after(10):
                    for i in range(30):
                        assert (await received.receive())[1] == b"before %d" % i
            await wait_for(lambda: not a.peers())
            async with hosts(["sq2"], validators=[ACCEPT_ALL]) as (b,):  # same peer id
                await b.connect(a.addrs()[0])
                await wait_mesh([a, b])
                for i in range(3):
                    await b.publish(b"after %d" % i)
                with trio.fail_after(10):
                    got = [(await received.receive())[1] for _ in range(3)]
                assert got == [b"after 0", b"after 1", b"after 2"]


async def test_a_sender_whose_clock_stepped_back_starts_where_it_is_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The seqno counter starts at the clock, so a node restarted after its clock
    stepped back reused the ids of its last run: its peers dropped its messages
    as seen. ``seqno_start`` (the start of a span the node reserved past its
    last one, store/seqnos.py) keeps it past them, whatever the clock says."""
    with trio.fail_after(60):
        async with hosts(["sb1"], validators=[ACCEPT_ALL]) as (a,):
            received = a.messages()
            async with hosts(["sb2"], validators=[ACCEPT_ALL]) as (b,):
                start = b._pubsub.counter
                await b.connect(a.addrs()[0])
                await wait_mesh([a, b])
                for i in range(3):
                    await b.publish(b"before %d" % i)
                with trio.fail_after(10):
                    for i in range(3):
                        assert (await received.receive())[1] == b"before %d" % i
                used = b._pubsub.counter
            await wait_for(lambda: not a.peers())
            stepped = types.SimpleNamespace(monotonic=time.monotonic, time_ns=lambda: start - 1)
            monkeypatch.setattr(pubsub_module, "time", stepped)  # the clock went back
            async with hosts(["sb2"], validators=[ACCEPT_ALL], seqno_start=used + 1) as (b,):
                assert b._pubsub.counter == used + 1
                await b.connect(a.addrs()[0])
                await wait_mesh([a, b])
                for i in range(3):
                    await b.publish(b"after %d" % i)
                with trio.fail_after(10):
                    got = [(await received.receive())[1] for _ in range(3)]
                assert got == [b"after 0", b"after 1", b"after 2"]


def test_a_seqno_start_must_fit_in_eight_bytes() -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        config("sb3", seqno_start=1 << 64)
    with pytest.raises(ValueError, match="8 bytes"):
        config("sb3", seqno_start=-1)
