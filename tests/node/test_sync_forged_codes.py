"""Sync `ops` frames of canonical msgpack that is not an op end the session as a
penalized protocol failure, whatever decode code the ops fail with.

docs/sync.md §3.1: an op that does not decode ends the session. Only the code
``encoding`` did: a peer filled 1 MiB frames with ~5 000 junk "ops" each that
failed with ``envelope`` (a 31-byte net), the session went on unpenalized, and
in 4 s one peer pushed out the node's whole record of 100 000 rejected ops.
Real node (libp2p on 127.0.0.1, SQLite store) and a bare libp2p host as the peer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

from gossipmind.core import encoding
from gossipmind.core import ops as opsmod
from gossipmind.core.errors import NetworkError
from gossipmind.core.identity import Identity
from gossipmind.net.host import open_libp2p_transport
from gossipmind.net.interface import SYNC_PROTOCOL, Stream, StreamEOF, TransportConfig
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.node.syncer import FORGED
from gossipmind.sync import messages
from gossipmind.sync.messages import Bye, Hello, Ops
from gossipmind.testnet.setup import prepare

FRAMES = 6  # frames of junk the peer tries to send
OPS_PER_FRAME = 200


STRANGER = Identity(os.urandom(32))  # no member: its ops are signed all the same
SEQ = [0]


def junk_op(code: str, net: bytes) -> bytes:
    """Canonical msgpack of 10 fields that ops.decode refuses with ``code``; or, for
    ``no_deps`` and ``genesis``, an op that decodes and is well signed but that no
    replica can hold (a second root of the DAG, a second genesis)."""
    if code in ("no_deps", "genesis"):
        SEQ[0] += 1
        kind = "net.genesis" if code == "genesis" else "pattern.report"
        body = {"p": os.urandom(64)}
        op = opsmod.create(
            STRANGER, net=net, kind=kind, seq=SEQ[0], lamport=SEQ[0], deps=[], ts=1000, body=body
        )
        return op.raw
    v, kind = 1, "pattern.report"
    if code == "envelope":
        net = os.urandom(31)  # net must be 32 bytes
    elif code == "version":
        v = 2
    elif code == "unknown_kind":
        kind = "pattern.unheard_of"
    doc: list[Any] = [v, net, kind, os.urandom(32), 1, 1, [], 0, {"p": os.urandom(64)}, b"s" * 64]
    raw = encoding.encode(doc)
    assert len(raw) >= messages.MIN_OP_BYTES  # not refused as too short to be an op
    return raw


def hello(node: Node) -> Hello:
    """Our summary: the node's own vector (it sends us nothing), a root of our own."""
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


async def frames_accepted(stream: Stream, frames: list[bytes]) -> int:
    """Send the frames until the node resets the stream; how many went out."""
    sent = 0
    try:
        for frame in frames:
            await stream.send(frame)
            sent += 1
            await trio.sleep(0.05)  # the node ingests each frame before reading the next
    except NetworkError:
        pass
    return sent


async def reset_within(stream: Stream, seconds: float) -> bool:
    """Whether the node ends the stream within ``seconds`` (it resets a failed session)."""
    with trio.move_on_after(seconds):
        try:
            while True:
                messages.decode(await stream.receive())
        except (StreamEOF, NetworkError):
            return True
    return False


CODES = ["envelope", "version", "unknown_kind", "no_deps", "genesis"]


@pytest.mark.parametrize("code", CODES)
def test_every_decode_code_is_forged(code: str) -> None:
    assert code in FORGED


async def test_frames_of_ops_that_do_not_decode_end_the_session_whatever_the_code(
    tmp_path: Path,
) -> None:
    spec = prepare(tmp_path, 1, 0)[0]
    cfg = NodeConfig(data_dir=spec.dir, synchronous="NORMAL", learn=False, sync_interval=600.0)
    with trio.fail_after(120):
        async with open_node(cfg) as node:
            topic = f"gossipmind/{node.net.hex()}/ops/1"
            for code in CODES:
                tcfg = TransportConfig(seed=os.urandom(32), topic=topic)
                async with open_libp2p_transport(tcfg, lambda _d: True) as peer:
                    await peer.connect(node.transport.addrs()[0])
                    stream, first = await open_session(peer, node)
                    assert isinstance(first, Hello)
                    rejected = len(node.store.replica.rejected)
                    failed = node.sync.failed_by_reason.get("protocol", 0)
                    batches = [
                        messages.encode(
                            Ops([junk_op(code, node.net) for _ in range(OPS_PER_FRAME)])
                        )
                        for _ in range(FRAMES)
                    ]
                    sent = await frames_accepted(stream, batches)
                    ended = await reset_within(stream, 5.0)
                    for _ in range(200):  # the node records the outcome after the reset
                        if node.sync.failed_by_reason.get("protocol", 0) > failed:
                            break
                        await trio.sleep(0.01)
                    new = len(node.store.replica.rejected) - rejected
                    # one frame ingested, then the session ends: not six frames' worth
                    assert ended and 0 < new <= OPS_PER_FRAME, (code, ended, sent, new)
                    assert node.sync.failed_by_reason.get("protocol", 0) == failed + 1, code
                    codes = [c for c, _ in list(node.store.replica.rejected.values())[-new:]]
                    assert set(codes) == {code}, (code, set(codes))
                    assert not node.guard.allowed(peer.peer_id, trio.current_time())
                    _, again = await open_session(peer, node)
                    assert again == Bye("later"), code
