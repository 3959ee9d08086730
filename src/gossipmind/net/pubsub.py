"""GossipSub for gossipmind: settings, back-pressure, validator adapter, delivery pump.

Workarounds for py-libp2p 0.8.1 (LIBP2P_NOTES §3, §4, §11), all in one place:

* meshsub/1.1 and 1.0 only (1.2's per-message IDONTWANT costs 2-3x the CPU);
* ``heartbeat_interval=1`` (default 120 s), adaptive gossip off (it stretches the
  heartbeat), spam protection off (its 10 msg/s limit silently drops messages,
  the publisher's own included);
* eclipse protection off: it wants >= 3 distinct IPs in the mesh, which a testnet
  on 127.0.0.1 never has;
* ``allowed_topics`` = our one topic, so peers cannot make us track others;
* **back-pressure**: ``Pubsub.publish`` pushes onto per-peer outbound queues
  (``Pubsub.peer_queues``, 32 RPCs each) and silently drops when one is full. We
  wait, before each publish, until every queue is below a high-water mark. A peer
  whose queue stays deep past a stall timeout is excluded from the wait until it
  drains, so one stuck peer cannot stall the node (it loses gossip; sync repairs);
* **delivery pump**: the subscription channel holds 32 messages and drops when
  full, so a dedicated task drains it at once into our own, larger channel and
  skips our own messages (pubsub delivers them back to the publisher);
* the default message id (sender + seqno) is kept: the message cache keys on it
  anyway; ops are deduplicated by op id above this layer;
* **one writer per stream**: py-libp2p writes RPCs to a peer's stream from its
  per-peer sending loop *and* from gossipsub's flush and recent-message paths.
  Yamux splits an RPC larger than the send window into several frames and
  yields between them, so another RPC's frames could land in between: the
  receiver then fails to parse the stream (``DecodeError``), which py-libp2p does
  not catch, and its host dies. Seen under load with batches of tens of KiB;
  :class:`_Pubsub` serialises writes per stream.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from google.protobuf.message import DecodeError
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub

from gossipmind.core.errors import GossipmindError
from gossipmind.net.interface import BufferBytes, TransportConfig, Validator
from gossipmind.net.streams import LIBP2P_IO_ERRORS

log = logging.getLogger(__name__)

_POLL = 0.002


@dataclass(slots=True)
class GossipStats:
    """Counters of the gossip path of one transport."""

    published: int = 0
    delivered: int = 0
    dropped_buffer_full: int = 0
    backpressure_waits: int = 0
    stalled_peers: int = 0


def new_pubsub(host: Any, config: TransportConfig) -> tuple[Any, Any]:
    """Build (router, pubsub) with our settings; run both as services, router last."""
    router = GossipSub(
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=config.degree,
        degree_low=config.degree_low,
        degree_high=config.degree_high,
        heartbeat_interval=config.heartbeat_interval,
        adaptive_gossip_enabled=False,
        spam_protection_enabled=False,
        eclipse_protection_enabled=False,
    )
    pubsub = _Pubsub(
        host,
        router,
        strict_signing=True,
        max_inbound_rpc_size=config.max_message_size + 64 * 1024,
        allowed_topics={config.topic},
    )
    return router, pubsub


class _Pubsub(Pubsub):
    """py-libp2p's Pubsub whose RPC writes to one stream never interleave."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_locks: weakref.WeakKeyDictionary[Any, trio.Lock] = weakref.WeakKeyDictionary()

    async def stream_handler(self, stream: Any) -> None:
        """py-libp2p's handler, which lets a malformed RPC (protobuf DecodeError)
        escape and take the host down: any peer could crash us with one frame."""
        try:
            await super().stream_handler(stream)
        except DecodeError as exc:
            peer_id = stream.muxed_conn.peer_id
            log.info("malformed pubsub RPC from %s: %s", peer_id, exc)
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 2):
                try:
                    await stream.reset()
                except LIBP2P_IO_ERRORS as reset_exc:
                    log.debug("reset after a malformed RPC: %r", reset_exc)
            self._handle_dead_peer(peer_id)

    async def push_msg(self, msg_forwarder: Any, msg: Any) -> None:
        """py-libp2p's, which runs as a service task per received message: an
        exception from it (its signature validator re-raises when a message's
        ``key`` field cannot be read) took the whole host down, so one RPC from
        anyone who can connect stopped the node. A peer's message that cannot be
        handled is dropped; our own publishing still raises."""
        try:
            await super().push_msg(msg_forwarder, msg)
        except Exception as exc:
            if msg_forwarder == self.my_id:
                raise
            log.info("dropped a pubsub message from %s: %r", msg_forwarder, exc)

    async def write_msg(self, stream: Any, rpc_msg: Any) -> bool:
        lock = self._write_locks.get(stream)
        if lock is None:
            lock = self._write_locks[stream] = trio.Lock()
        async with lock:
            return bool(await super().write_msg(stream, rpc_msg))


def adapt_validator(validator: Validator) -> Callable[[Any, Any], bool]:
    """Turn ``validator(data) -> bool`` into a py-libp2p sync topic validator."""

    def _validate(_forwarder: Any, msg: Any) -> bool:
        try:
            return bool(validator(bytes(msg.data)))
        except GossipmindError as exc:
            # A validator should return False, not raise; reject rather than let
            # py-libp2p's read loop see the exception.
            log.debug("validator raised %r; rejecting", exc)
            return False

    return _validate


class Backpressure:
    """Wait until no peer's outbound pubsub queue is deep (see module docstring)."""

    def __init__(self, pubsub: Any, high: int, stall_timeout: float, stats: GossipStats) -> None:
        self._pubsub = pubsub
        self._high = high
        self._stall_timeout = stall_timeout
        self._stats = stats
        self._stalled: set[Any] = set()

    def _deep(self) -> list[Any]:
        queues: dict[Any, Any] = self._pubsub.peer_queues
        self._stalled = {p for p in self._stalled if p in queues and len(queues[p]) > self._high}
        return [p for p, q in queues.items() if len(q) > self._high and p not in self._stalled]

    def depth(self) -> int:
        """Deepest outbound queue right now."""
        queues: dict[Any, Any] = self._pubsub.peer_queues
        return max((len(q) for q in queues.values()), default=0)

    async def wait(self) -> None:
        """Always a checkpoint: ``Pubsub.publish`` may not yield, and a tight publish
        loop must not starve the other tasks (nor escape cancellation)."""
        deep = self._deep()
        if not deep:
            await trio.lowlevel.checkpoint()
            return
        self._stats.backpressure_waits += 1
        deadline = trio.current_time() + self._stall_timeout
        while deep:
            if trio.current_time() >= deadline:
                self._stalled.update(deep)
                self._stats.stalled_peers += len(deep)
                log.info("gossip: %d peer(s) not draining; publishing past them", len(deep))
                return
            await trio.sleep(_POLL)
            deep = self._deep()


async def pump_subscription(
    subscription: Any,
    self_id: bytes,
    send: trio.MemorySendChannel[tuple[str, bytes]],
    stats: GossipStats,
    limit_bytes: int = 64 * 1024 * 1024,
) -> None:
    """Move validated messages from py-libp2p's 32-slot channel to ours, promptly.

    Ours is bounded in messages and in bytes (``limit_bytes``); past either, new
    messages are dropped and counted (anti-entropy fetches their ops later)."""
    broken = False
    held = BufferBytes(limit_bytes)
    while True:
        msg = await subscription.get()
        origin = bytes(msg.from_id)
        if origin == self_id or broken:
            continue
        data = bytes(msg.data)
        if not held.admit(send, len(data)):
            stats.dropped_buffer_full += 1
            continue
        try:
            send.send_nowait((ID(origin).to_base58(), data))
        except trio.WouldBlock:
            stats.dropped_buffer_full += 1
            continue
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The node closed its receiving end: keep draining so py-libp2p does
            # not log a warning per message, but deliver nothing.
            broken = True
            continue
        held.sent(len(data))
        stats.delivered += 1
