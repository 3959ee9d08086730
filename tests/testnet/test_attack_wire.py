"""The hostile peer's stream probe (``attack_wire``) over real libp2p on 127.0.0.1.

The attacks count what the target should have counted from how each stream ended:
a bye is a refusal, anything else a session the target failed. A busy refusal
whose bye never reached us looks like a failure; a flaky attack test on CI counted
one so. The probe now asks the target whether it refused a session meanwhile.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from gossipmind.net.host import Libp2pTransport, open_libp2p_transport
from gossipmind.net.interface import MAX_FRAME_SIZE, Stream, StreamHandler, TransportConfig
from gossipmind.sync import messages
from gossipmind.sync.messages import Bye
from gossipmind.testnet.attack_wire import _malformed_stream, _trickle, stream_outcome, uvarint

PROTOCOL = "/gossipmind/test-refuse/1.0.0"
TOPIC = "gossipmind/attack-wire-test/ops/1"
BIG = b"\x00" * (MAX_FRAME_SIZE + 1024)


def config(name: str, **overrides: int) -> TransportConfig:
    seed = hashlib.sha256(name.encode()).digest()
    return TransportConfig(seed=seed, topic=TOPIC, **overrides)  # type: ignore[arg-type]


async def refuse(stream: Stream) -> None:
    """What the node does when busy: a bye, then the handler returns unread."""
    await stream.send(messages.encode(Bye("busy")))


async def read_one(stream: Stream) -> None:
    """What the node does in a session: it reads a frame (too large: it resets)."""
    await stream.receive()


@dataclass
class Target:
    """Refuses its first ``busy`` streams as busy, their byes lost; then serves."""

    busy: int
    refused: int = 0
    streams: list[str] = field(default_factory=list)

    async def handle(self, stream: Stream) -> None:
        if self.refused < self.busy:
            self.refused += 1
            self.streams.append("refused, bye lost")
            return  # the stream is closed with nothing on it
        self.streams.append("session")
        await read_one(stream)


@dataclass
class FakeHostile:
    """The two things ``_malformed_stream`` asks of a :class:`Hostile`."""

    transport: Libp2pTransport
    peer: str
    target: Target

    async def open_sync(self) -> Stream:
        return await self.transport.open_stream(self.peer, PROTOCOL + "/counted")

    async def busy_refusals(self) -> int:
        return self.target.refused


@asynccontextmanager
async def pair(
    tag: str, handlers: dict[str, StreamHandler]
) -> AsyncIterator[tuple[Libp2pTransport, Libp2pTransport]]:
    """A hostile host (it may send frames of 4 MiB) connected to a target host
    that serves ``handlers``."""
    async with (
        open_libp2p_transport(
            config(f"wire-hostile-{tag}", max_frame_size=4 * MAX_FRAME_SIZE), lambda _d: True
        ) as hostile,
        open_libp2p_transport(config(f"wire-target-{tag}"), lambda _d: True) as target,
    ):
        for protocol, handler in handlers.items():
            target.set_stream_handler(protocol, handler)
        await hostile.connect(target.addrs()[0])
        yield hostile, target


async def test_the_probe_tells_refusals_from_drops() -> None:
    """A refusal reads as one; a stream the target ends without a bye reads as a
    drop. Sending a frame larger than the stream window races the target's bye
    with the end of the stream (py-libp2p discards a bye still buffered when the
    reset arrives, as ``_malformed_stream`` explains): on a loaded machine the
    bye was sometimes not seen, so each refusal gets up to 5 tries — every one
    a refusal or a drop, and at least one a refusal."""
    handlers = {PROTOCOL: refuse, PROTOCOL + "/read": read_one}
    with trio.fail_after(60):
        async with pair("probe", handlers) as (hostile, target):
            for data, framed in ((BIG, True), (uvarint(1 << 30) + b"\x00" * 64, False)):
                outcomes = []
                for _ in range(5):
                    stream = await hostile.open_stream(target.peer_id, PROTOCOL)
                    outcomes.append(await stream_outcome(stream, data, framed=framed, close=False))
                    if outcomes[-1] == "refused (busy)":
                        break
                assert outcomes[-1] == "refused (busy)", (len(data), outcomes)
                assert set(outcomes) <= {"refused (busy)", "dropped"}, (len(data), outcomes)
            stream = await hostile.open_stream(target.peer_id, PROTOCOL + "/read")
            assert await stream_outcome(stream, BIG, framed=True, close=False) == "dropped"


async def test_a_refusal_whose_bye_was_lost_is_tried_again() -> None:
    node = Target(busy=2)
    with trio.fail_after(60):
        async with pair("retry", {PROTOCOL + "/counted": node.handle}) as (hostile, target):
            h = FakeHostile(hostile, target.peer_id, node)
            outcome = await _malformed_stream(h, BIG, framed=True, close=False)  # type: ignore[arg-type]
            assert outcome == "dropped"
            # the drop we count is the session the target failed, not a refusal
            assert node.streams == ["refused, bye lost", "refused, bye lost", "session"]


async def test_the_trickler_stops_when_the_target_drops_the_stream() -> None:
    """The slowloris' empty frames met a stream the target had reset (its session
    deadline): the send's NetworkError escaped the session's nursery and ended the
    whole slow-sync attack (a CI-style run of tests/testnet/test_attacks.py failed
    on it). The trickler now stops; the session's reader sees the drop."""

    async def drop(stream: Stream) -> None:
        await stream.receive()  # the first empty frame
        await stream.reset()

    with trio.fail_after(30):
        async with pair("trickle", {PROTOCOL + "/drop": drop}) as (hostile, target):
            stream = await hostile.open_stream(target.peer_id, PROTOCOL + "/drop")
            with trio.move_on_after(10) as late:  # sends until one fails, then returns
                await _trickle(stream, 0.01)
            assert not late.cancelled_caught
