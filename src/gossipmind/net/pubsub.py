"""GossipSub for gossipmind: settings, back-pressure, validator adapter, delivery pump.

Workarounds for py-libp2p 0.8.1 (LIBP2P_NOTES §3, §4, §11), all in one place:

* meshsub/1.1 and 1.0 only (1.2's per-message IDONTWANT costs 2-3x the CPU);
* ``heartbeat_interval=1`` (default 120 s), adaptive gossip off (it stretches the
  heartbeat), spam protection off (its 10 msg/s limit silently drops messages,
  the publisher's own included);
* eclipse protection off: it wants >= 3 distinct IPs in the mesh, which a testnet
  on 127.0.0.1 never has;
* ``allowed_topics`` = our one topic, so peers cannot make us track others;
* inbound RPCs are trimmed before py-libp2p handles them, and an exception of
  its read loop ends the peer's stream instead of the host
  (:mod:`~gossipmind.net.rpcguard`);
* validation results are cached for less time than seen message ids, so a
  reused message id cannot skip the validator;
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
* **outbound RPCs carry at most** :data:`~gossipmind.net.rpcguard.MAX_MESSAGES_PER_RPC`
  **messages**: py-libp2p answers an IWANT with one RPC holding every message
  asked for (split by size only), and our peers' inbound guard keeps only the
  first 128 of an RPC, so a larger reply would lose the rest. :class:`_GossipSub`
  splits it;
* **no signed peer records**: py-libp2p attaches one to every RPC it sends,
  checking first that it is current by listing the host's listen addresses
  (socket names parsed into multiaddrs: ~2 % of a loaded node's event loop).
  Nothing of ours reads them (:mod:`~gossipmind.net.rpcguard` drops them
  inbound), so :class:`_Pubsub` strips them from every RPC but the hello that
  opens a stream, and sees the host through
  :class:`_PubsubHost`, which lists the addresses at most once a second;
* **one writer per stream**: py-libp2p writes RPCs to a peer's stream from its
  per-peer sending loop *and* from gossipsub's flush and recent-message paths.
  Yamux splits an RPC larger than the send window into several frames and
  yields between them, so another RPC's frames could land in between: the
  receiver then fails to parse the stream (``DecodeError``), which py-libp2p does
  not catch, and its host dies. Seen under load with batches of tens of KiB;
  :class:`_Pubsub` serialises writes per stream;
* **no delivery history**: py-libp2p appends the time of every message its router
  publishes, forwards or delivers to ``GossipSub.recent_message_deliveries``, and
  prunes that list only in its adaptive-gossip health check, which is off here:
  32 bytes per message for the host's life (~80 MiB a day at the 31 messages/s a
  soak-test node handled under steady writes), whatever the knowledge base holds.
  Nothing else reads it, so :class:`_GossipSub` keeps none (:class:`_NoHistory`);
* **no message copies for equivocation checks**: py-libp2p remembers each
  message it forwards, whole, under its sender and seqno, to reject a second,
  different message under the same key; it trims that map to 500 entries once
  it exceeds 1 000, at a heartbeat. Up to ~1 000 whole messages (~256 MiB at
  the largest message size). A repeated (sender, seqno) only reaches the
  check once py-libp2p's seen cache has forgotten it (:data:`SEEN_TTL`), so
  those entries, gone after a few seconds under load, caught nothing.
  :class:`_GossipSub` keeps a 16-byte digest of each message's data and topics
  instead, for :data:`EQUIVOCATION_TTL` (twice the seen cache's), at most
  :data:`EQUIVOCATION_KEYS` of them, the oldest dropped first: a sender that
  reuses a seqno with other data within that time is refused and penalised,
  in ~300 bytes an entry.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from gossipmind.core.errors import GossipmindError
from gossipmind.core.saying import Bounded
from gossipmind.net.interface import BufferBytes, TransportConfig, Validator
from gossipmind.net.rpcguard import MAX_MESSAGES_PER_RPC, TrimmedStream
from gossipmind.net.streams import LIBP2P_IO_ERRORS

log = logging.getLogger(__name__)

_POLL = 0.002
# py-libp2p caches validation results by message id (sender + seqno), 300 s by
# default, but forgets seen ids after SEEN_TTL (120 s): a sender could then reuse
# an id with other data and skip the validator. Keep results for less than that.
SEEN_TTL = 120
VALIDATION_CACHE_TTL = 60
# How long, and for how many (sender, seqno) keys, the router keeps a message's
# digest for its equivocation check: past the seen cache (SEEN_TTL), at up to ~68
# messages/s; ~5 MiB at most
EQUIVOCATION_TTL = 2 * SEEN_TTL
_clock = time.monotonic  # (tests move it)
EQUIVOCATION_KEYS = 16384


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
    router = _GossipSub(
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
        _PubsubHost(host),
        router,
        strict_signing=True,
        seen_ttl=SEEN_TTL,
        max_inbound_rpc_size=config.max_message_size + 64 * 1024,
        allowed_topics={config.topic},
        seqno_start=config.seqno_start,
        validation_cache_ttl=VALIDATION_CACHE_TTL,
    )
    return router, pubsub


class _PubsubHost:
    """The host as :class:`_Pubsub` and its router see it: the host itself, but
    for :meth:`get_addrs`, read at most once per :data:`ADDRS_TTL` seconds (see
    the module docstring: it only feeds the peer records we never send)."""

    ADDRS_TTL = 1.0

    def __init__(self, host: Any) -> None:
        self._host = host
        self._addrs: list[Any] = []
        self._read_at = -math.inf

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)

    def get_addrs(self) -> list[Any]:
        now = time.monotonic()
        if now - self._read_at >= self.ADDRS_TTL:
            self._addrs, self._read_at = list(self._host.get_addrs()), now
        return list(self._addrs)


class _NoHistory(dict[str, list[float]]):
    """A mapping that keeps nothing: ``h[topic]`` is a new empty list each time, so
    what py-libp2p appends to it is dropped (see the module docstring)."""

    def __missing__(self, key: str) -> list[float]:
        return []


class _GossipSub(GossipSub):
    """py-libp2p's router, whose RPCs to a peer never hold more messages than that
    peer's inbound guard keeps, and which keeps no delivery history (see the module
    docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recent_message_deliveries = _NoHistory()
        # (sender, seqno) -> (digest, when first seen), oldest first
        self._seen_digests: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        # one line per equivocation let any peer fill the log (keys cost nothing)
        self.equivocation_warnings = Bounded(log, unsaid="{} more equivocations were not said")

    def _check_equivocation(self, msg: rpc_pb2.Message) -> bool:
        """py-libp2p's check (a message under a known sender and seqno must carry
        the same data and topics) against a digest kept for EQUIVOCATION_TTL, not a
        kept copy."""
        key = msg.from_id + msg.seqno
        digest = _message_digest(msg)
        now = _clock()
        seen = self._seen_digests
        while seen:  # forget the expired, oldest first
            first = next(iter(seen.values()))
            if now - first[1] <= EQUIVOCATION_TTL and len(seen) <= EQUIVOCATION_KEYS:
                break
            seen.popitem(last=False)
        known = seen.get(key)
        if known is None:
            seen[key] = (digest, now)
            if len(seen) > EQUIVOCATION_KEYS:
                seen.popitem(last=False)
            return True
        if known[0] == digest:
            return True
        self.equivocation_warnings.warning(
            now, "equivocation: peer %s sent two messages under one seqno", ID(msg.from_id)
        )
        if self.scorer is not None:
            self.scorer.penalize_equivocation(ID(msg.from_id), 100.0)
        return False

    def send_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, priority: bool = False) -> None:
        for part in split_publish(rpc, MAX_MESSAGES_PER_RPC):
            super().send_rpc(peer_id, part, priority)


def _message_digest(msg: rpc_pb2.Message) -> bytes:
    """BLAKE2b-128 of the topics (counted, each length-prefixed) and the data."""
    h = hashlib.blake2b(len(msg.topicIDs).to_bytes(4, "big"), digest_size=16)
    for topic in msg.topicIDs:
        raw = topic.encode()
        h.update(len(raw).to_bytes(4, "big") + raw)
    h.update(msg.data)
    return h.digest()


def split_publish(rpc: rpc_pb2.RPC, limit: int) -> list[rpc_pb2.RPC]:
    """``rpc`` as RPCs of at most ``limit`` published messages each, in order: the
    first keeps everything else of ``rpc`` (control, subscriptions), every one keeps
    its sender record."""
    if len(rpc.publish) <= limit:
        return [rpc]
    messages = list(rpc.publish)
    first = rpc_pb2.RPC()
    first.CopyFrom(rpc)
    del first.publish[limit:]
    parts = [first]
    for start in range(limit, len(messages), limit):
        part = rpc_pb2.RPC(publish=messages[start : start + limit])
        if rpc.HasField("senderRecord"):
            part.senderRecord = rpc.senderRecord
        parts.append(part)
    return parts


class _Pubsub(Pubsub):
    """py-libp2p's Pubsub, hardened: RPC writes to one stream never interleave, and
    no peer's RPC can stop the host or make it hold state for foreign topics."""

    def __init__(self, *args: Any, seqno_start: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_locks: weakref.WeakKeyDictionary[Any, trio.Lock] = weakref.WeakKeyDictionary()
        # py-libp2p starts the seqno counter at the Unix time in seconds: a node
        # that published more messages than seconds passed, then restarted, reused
        # its message ids (sender + seqno), and its peers dropped the new messages
        # as seen or refused them as equivocation. In nanoseconds (as go-libp2p),
        # a restart never falls behind the ids it used unless the clock steps back;
        # a node starts where the span it reserved durably starts, which covers that.
        self.counter = seqno_start or time.time_ns()

    async def continuously_read_stream(self, stream: Any) -> None:
        """py-libp2p's read loop, fed RPCs trimmed to what it can safely handle
        (:mod:`~gossipmind.net.rpcguard`: foreign topics, huge or repeated id
        lists, peer exchange, odd seqnos, too many messages per RPC)."""
        topics = self.allowed_topics if self.allowed_topics is not None else self.topic_ids
        trimmed: Any = TrimmedStream(stream, topics, self.max_inbound_rpc_size)
        await super().continuously_read_stream(trimmed)

    async def stream_handler(self, stream: Any) -> None:
        """py-libp2p's handler lets any exception of its read loop escape, and the
        host dies with it: a malformed RPC (protobuf ``DecodeError``), a GRAFT for
        a topic that is not UTF-8 (``UnicodeDecodeError`` from the router's PRUNE
        reply)... One frame from any peer stopped the node. Whatever a peer's RPC
        makes the loop raise now ends that stream and drops the peer's pubsub
        state; cancellation still propagates."""
        try:
            await super().stream_handler(stream)
        except Exception as exc:  # noqa: BLE001 - any peer-driven failure ends its stream only
            peer_id = stream.muxed_conn.peer_id
            log.info("pubsub RPC from %s failed: %r", peer_id, exc)
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 2):
                try:
                    await stream.reset()
                except LIBP2P_IO_ERRORS as reset_exc:
                    log.debug("reset after a failed RPC: %r", reset_exc)
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
        if rpc_msg.HasField("senderRecord"):  # never sent: see the module docstring
            rpc_msg.ClearField("senderRecord")
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
