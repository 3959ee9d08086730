"""A long-running node keeps no per-message history in py-libp2p's router.

py-libp2p appends the time of every message the router publishes, forwards or
delivers to ``GossipSub.recent_message_deliveries`` and prunes it only in its
adaptive-gossip health check, which gossipmind turns off: a float per message
for the host's life, 32 bytes each (found by a soak test of a testnet). Its
equivocation check kept each message whole, up to ~1 000 of them: gossipmind's
router keeps a bounded set of digests instead, and still rejects a second,
different message under a known sender and seqno.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p.pubsub.pb import rpc_pb2

from gossipmind.net import pubsub
from gossipmind.net.host import Libp2pTransport, open_libp2p_transport
from gossipmind.net.interface import TransportConfig
from gossipmind.net.mesh import mesh_peers
from gossipmind.net.pubsub import EQUIVOCATION_KEYS, EQUIVOCATION_TTL, SEEN_TTL

TOPIC = "gossipmind/pubsub-history-test/ops/1"
MESSAGES = 60


def history(t: Libp2pTransport) -> int:
    """Entries the router holds in its delivery history, over every topic."""
    return sum(len(v) for v in t._pubsub.router.recent_message_deliveries.values())


async def test_router_keeps_no_history_of_the_messages_it_handles() -> None:
    """Publisher, forwarder and receiver in a line: after 60 messages none of the
    three routers holds an entry per message (it held 60 each)."""
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            a, b, c = [
                await stack.enter_async_context(
                    open_libp2p_transport(
                        TransportConfig(seed=os.urandom(32), topic=TOPIC), lambda _d: True
                    )
                )
                for _ in range(3)
            ]
            await a.connect(b.addrs()[0])
            await b.connect(c.addrs()[0])
            while not (mesh_peers(a) and len(mesh_peers(b)) == 2 and mesh_peers(c)):
                await trio.sleep(0.05)
            received = 0
            for i in range(MESSAGES):
                await a.publish(b"message %d" % i)
                while True:  # drain what has arrived so far
                    try:
                        c.messages().receive_nowait()
                    except trio.WouldBlock:
                        break
                    received += 1
            while received < MESSAGES:  # every message crossed b: forwarded, delivered
                await c.messages().receive()
                received += 1
            assert b.stats.delivered >= MESSAGES
            assert [history(t) for t in (a, b, c)] == [0, 0, 0]
            # no message is kept whole for the equivocation check: digests only
            routers = [t._pubsub.router for t in (a, b, c)]
            assert [len(r.equivocation_detection) for r in routers] == [0, 0, 0]
            assert len(routers[1]._seen_digests) == MESSAGES
            assert {len(d) for d, _ in routers[1]._seen_digests.values()} == {16}


@asynccontextmanager
async def a_router() -> AsyncIterator[Any]:
    """The gossip router of one transport (no peers)."""
    with trio.fail_after(30):
        async with open_libp2p_transport(
            TransportConfig(seed=os.urandom(32), topic=TOPIC), lambda _d: True
        ) as t:
            yield t._pubsub.router


def message(sender: bytes, seqno: int, data: bytes, topic: str = TOPIC) -> rpc_pb2.Message:
    return rpc_pb2.Message(
        from_id=sender, seqno=seqno.to_bytes(8, "big"), data=data, topicIDs=[topic]
    )


async def test_equivocation_is_still_caught_and_the_digests_are_bounded() -> None:
    """A second message under a known (sender, seqno) passes only if its data and
    topics are the same; the oldest keys go first once the bound is reached."""
    async with a_router() as router:
        sender = b"\x00\x24" + os.urandom(36)
        assert router._check_equivocation(message(sender, 1, b"batch"))
        assert router._check_equivocation(message(sender, 1, b"batch"))  # a copy
        assert not router._check_equivocation(message(sender, 1, b"other batch"))
        assert not router._check_equivocation(message(sender, 1, b"batch", "other/topic"))
        assert router._check_equivocation(message(sender, 2, b"other batch"))
        assert router.scorer.equivocation_penalties  # the sender was penalised
        for seqno in range(3, EQUIVOCATION_KEYS + 3):
            assert router._check_equivocation(message(sender, seqno, b"x"))
        assert len(router._seen_digests) == EQUIVOCATION_KEYS
        assert sender + (1).to_bytes(8, "big") not in router._seen_digests
        # forgotten: a different message under seqno 1 is no longer caught
        assert router._check_equivocation(message(sender, 1, b"other batch"))
        assert len(router.equivocation_detection) == 0


async def test_a_digest_outlives_the_seen_cache_and_then_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """py-libp2p's seen cache drops a repeated (sender, seqno) for SEEN_TTL, so the
    check matters only after that: a digest is kept past it (a reused seqno with
    other data is still refused then), and forgotten after EQUIVOCATION_TTL."""
    now = [1000.0]
    monkeypatch.setattr(pubsub, "_clock", lambda: now[0])
    assert EQUIVOCATION_TTL > SEEN_TTL
    async with a_router() as router:
        sender = b"\x00\x24" + os.urandom(36)
        assert router._check_equivocation(message(sender, 1, b"batch"))
        now[0] += SEEN_TTL + 1  # the seen cache forgot it; the router did not
        assert not router._check_equivocation(message(sender, 1, b"other batch"))
        now[0] += EQUIVOCATION_TTL
        assert router._check_equivocation(message(sender, 2, b"x"))  # prunes
        assert sender + (1).to_bytes(8, "big") not in router._seen_digests
        assert router._check_equivocation(message(sender, 1, b"other batch"))


async def test_a_flood_of_equivocations_is_said_a_few_times_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each equivocation logged a warning: any peer (keys cost nothing) could
    write a line per message it sent. Every one is still refused."""
    caplog.set_level(logging.WARNING, logger="gossipmind.net.pubsub")
    async with a_router() as router:
        senders = [b"\x00\x24" + os.urandom(36) for _ in range(50)]
        for sender in senders:
            assert router._check_equivocation(message(sender, 1, b"batch"))
            assert not router._check_equivocation(message(sender, 1, b"other batch"))
        lines = [r.getMessage() for r in caplog.records if "equivocation" in r.getMessage()]
        assert len(lines) == router.equivocation_warnings.burst
        assert router.equivocation_warnings.unsaid == 50 - router.equivocation_warnings.burst
