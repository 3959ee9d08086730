"""A sync stream that ends inside a frame is judged by its idle time, like a link
that drops between frames (docs/sync.md §3.4: a session that kept making
progress is never penalized because its link dropped).

py-libp2p reports a lost connection as a clean end of stream, and during a
catch-up that usually lands inside one of the sender's 512 KiB `ops` frames: the
receiver counted `truncated`, a penalized reason, and made the honest sender
wait a timeout (2 of 5 link drops in a 3 000-op catch-up).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

from gossipmind.net.host import open_libp2p_transport
from gossipmind.net.interface import SYNC_PROTOCOL, Stream, TransportConfig, TruncatedFrame
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.node.syncer import PENALIZED, SyncCounters, drive
from gossipmind.store.datadir import DataDir
from gossipmind.store.keyfile import read_key
from gossipmind.store.sqlite import Store
from gossipmind.sync import messages
from gossipmind.sync.messages import Bye, Hello, Ops
from gossipmind.sync.session import Session
from gossipmind.testing import KB, sample_report
from gossipmind.testing.memory import MemoryKB
from gossipmind.testnet.setup import prepare


def authored(spec_dir: Path, count: int) -> list[bytes]:
    """``count`` valid ops of the network, signed by another member, in causal order."""
    data = DataDir(spec_dir)
    ident = read_key(data.key)
    with Store.open(data.store, synchronous="OFF") as store:
        return [
            store.create_op(
                ident, "pattern.report", sample_report(template=f"op {i} <*>"), 1000 + i
            ).raw
            for i in range(count)
        ]


def hello(node: Node) -> Hello:
    """The node's own vector (it sends us nothing), a root of our own (no "in sync")."""
    src = node.source
    return Hello(src.net, src.version_vector(), src.heads(), os.urandom(32), 0, [])


async def open_session(peer: Any, node: Node) -> tuple[Stream, messages.Message]:
    """A sync stream to ``node`` with our hello sent, and its first answer; tried
    again while the node is busy (its own session with us at connection time)."""
    for _ in range(100):
        stream = await peer.open_stream(node.transport.peer_id, SYNC_PROTOCOL)
        await stream.send(messages.encode(hello(node)))
        with trio.fail_after(10):
            first = messages.decode(await stream.receive())
        if first != Bye("busy"):
            return stream, first
        await stream.reset()
        await trio.sleep(0.1)
    raise AssertionError("the node stayed busy")


@asynccontextmanager
async def session_with(node: Node) -> AsyncIterator[tuple[Any, Stream]]:
    """A raw libp2p peer of the node's network, and a sync stream to the node past
    its hello and its ``sent`` (the node, responder, waits for our ops)."""
    topic = f"gossipmind/{node.net.hex()}/ops/1"
    tcfg = TransportConfig(seed=os.urandom(32), topic=topic)
    async with open_libp2p_transport(tcfg, lambda _d: True) as peer:
        await peer.connect(node.transport.addrs()[0])
        stream, first = await open_session(peer, node)
        assert isinstance(first, Hello)
        assert messages.decode(await stream.receive()) == messages.Sent()
        yield peer, stream


async def test_a_catch_up_whose_stream_ends_inside_a_frame_is_not_penalized(
    tmp_path: Path,
) -> None:
    specs = prepare(tmp_path, 2, 0)
    raws = authored(specs[1].dir, 40)
    cfg = NodeConfig(data_dir=specs[0].dir, synchronous="NORMAL", learn=False, sync_interval=600.0)
    with trio.fail_after(120):
        async with open_node(cfg) as node, session_with(node) as (peer, stream):
            held = len(node.store.replica.meta)
            failed = dict(node.sync.failed_by_reason)
            await stream.send(messages.encode(Ops(raws[:20])))  # progress
            cut = messages.encode(Ops(raws[20:]))
            # the link goes down halfway through the next frame: its end of stream
            await stream.send_unframed(_uvarint(len(cut)) + cut[: len(cut) // 2])
            await stream.close()
            for _ in range(500):
                if node.sync.failed_by_reason != failed:
                    break
                await trio.sleep(0.01)
            delta = {
                k: v - failed.get(k, 0)
                for k, v in node.sync.failed_by_reason.items()
                if v != failed.get(k, 0)
            }
            assert delta == {"truncated": 1}
            assert len(node.store.replica.meta) == held + 20  # the first frame stays
            now = trio.current_time()
            assert node.guard.allowed(peer.peer_id, now), "an honest sender was made to wait"
            assert node.guard.strikes(peer.peer_id, now) == 0
            _, again = await open_session(peer, node)  # and the catch-up goes on
            assert isinstance(again, Hello)


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class CutAfter:
    """A stream whose peer sends ``frames`` (each after a delay), then waits
    ``last`` seconds and ends the stream inside a frame."""

    def __init__(self, frames: list[tuple[float, bytes]], last: float) -> None:
        self._frames = list(frames)
        self._last = last
        self.was_reset = False

    @property
    def remote_peer(self) -> str:
        return "peer"

    @property
    def protocol(self) -> str:
        return messages.PROTOCOL

    async def send(self, frame: bytes) -> None:
        pass

    async def receive(self) -> bytes:
        if self._frames:
            delay, frame = self._frames.pop(0)
            await trio.sleep(delay)
            return frame
        await trio.sleep(self._last)
        raise TruncatedFrame("truncated frame from peer: got 10 of 1000 bytes")

    async def close(self) -> None:
        pass

    async def reset(self) -> None:
        self.was_reset = True


async def test_a_stream_cut_inside_a_frame_after_holding_the_slot_idle_is_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Judged by idle time: a peer that holds the session slot idle for a
    timeout's worth in all (no single wait reaching it) and then ends the stream
    mid-frame is penalized (``held``), as one that closes between frames is; a
    shorter idle time is not."""
    kb = MemoryKB(KB(seed=5).genesis)
    hello_frame = messages.encode(Hello(kb.net, {}, [], b"\x01" * 32, 0, []))
    empty = messages.encode(Ops([]))
    for waits, expected in (((5.0, 5.0), "truncated"), ((20.0, 15.0), "held")):
        stream = CutAfter([(0.0, hello_frame), (waits[0], empty)], waits[1])
        session = Session(kb, initiator=False)
        why = await drive(stream, session, kb.ingest_raw, SyncCounters(), timeout=30, limit=120)
        assert why == expected and stream.was_reset
        assert (why in PENALIZED) == (expected == "held")
