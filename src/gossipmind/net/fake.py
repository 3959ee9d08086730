"""An in-memory network with the :class:`~gossipmind.net.interface.Transport` interface.

For tests of the sync protocol and the node without sockets: deterministic enough
to reproduce failures, hostile enough to find them. All time is trio time, so tests
can run it under ``trio.testing.MockClock(autojump_threshold=0)``.

Model:

* **Gossip** floods along connections, like a gossipsub mesh where every link is
  a mesh link: each node validates a message once (its validator, if any; a
  rejected message is neither delivered nor forwarded), delivers it, and forwards
  it to its other neighbours. Each (message, link) hop is dropped with
  probability ``drop`` and delayed by ``uniform(*delay)`` seconds; messages in
  flight on a link that goes down are lost. Every link draws from its own
  ``random.Random`` seeded with ``(seed, sender, receiver)``, so a link's fault
  sequence does not depend on task scheduling elsewhere.
* **Streams** are reliable, ordered, bounded frame channels. When one side
  resets a stream, or the link goes down, buffered frames are lost and the
  other side reads :class:`StreamEOF` (py-libp2p does the same).
* **Partitions**: :meth:`FakeNetwork.partition` cuts every link between groups
  and refuses connections across them; peers not named in any group form one
  more group. :meth:`FakeNetwork.heal` lifts it and (by default) restores the
  links it cut, announcing them on :meth:`FakeTransport.connections` as new
  connections, as a reconnecting node would.
"""

from __future__ import annotations

import logging
import random
import weakref
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from gossipmind.core.errors import GossipmindError, NetworkError
from gossipmind.net.interface import (
    MAX_FRAME_SIZE,
    MAX_GOSSIP_MESSAGE,
    BufferBytes,
    FrameTooLarge,
    Stream,
    StreamEOF,
    StreamHandler,
    Transport,
    Validator,
    split_p2p,
)

log = logging.getLogger(__name__)

STREAM_BUFFER = 64
SEEN_LIMIT = 100_000
STALL_TIMEOUT = 5.0


@dataclass(slots=True)
class FakeStats:
    """Per-network counters of gossip hops."""

    sent: int = 0
    dropped: int = 0
    lost_in_flight: int = 0
    delivered: int = 0
    rejected: int = 0
    overflowed: int = 0


class _Pipe:
    """State shared by the two ends of a fake stream."""

    __slots__ = ("broken",)

    def __init__(self) -> None:
        self.broken = False


class FakeStream:
    """One end of an in-memory stream (see :class:`~gossipmind.net.interface.Stream`)."""

    def __init__(
        self,
        remote_peer: str,
        protocol: str,
        out: trio.MemorySendChannel[bytes],
        inbox: trio.MemoryReceiveChannel[bytes],
        pipe: _Pipe,
        max_frame_size: int,
    ) -> None:
        self._remote_peer = remote_peer
        self._protocol = protocol
        self._out = out
        self._in = inbox
        self._pipe = pipe
        self._max = max_frame_size
        self._reset_here = False

    @property
    def remote_peer(self) -> str:
        return self._remote_peer

    @property
    def protocol(self) -> str:
        return self._protocol

    async def send(self, frame: bytes) -> None:
        if len(frame) > self._max:
            raise FrameTooLarge(f"frame of {len(frame)} bytes exceeds the limit of {self._max}")
        if self._pipe.broken:
            raise NetworkError(f"stream to {self._remote_peer} was reset")
        try:
            await self._out.send(bytes(frame))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise NetworkError(f"stream to {self._remote_peer} is closed") from exc

    async def receive(self) -> bytes:
        # Like py-libp2p: the side that reset gets an error, the other side an
        # end of stream; frames still buffered are discarded.
        if self._reset_here:
            raise NetworkError(f"stream to {self._remote_peer} was reset")
        if self._pipe.broken:
            raise StreamEOF(f"stream from {self._remote_peer} was reset")
        try:
            frame = await self._in.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._reset_here:
                raise NetworkError(f"stream to {self._remote_peer} was reset") from None
            raise StreamEOF(f"{self._remote_peer} closed the stream") from None
        if self._pipe.broken:
            raise StreamEOF(f"stream from {self._remote_peer} was reset")
        return frame

    async def close(self) -> None:
        await self._out.aclose()

    async def reset(self) -> None:
        self._reset_here = True
        self.break_now()
        await trio.lowlevel.checkpoint()

    def break_now(self) -> None:
        """Break the stream (reset or lost link): buffered frames are discarded."""
        self._pipe.broken = True
        self._out.close()
        self._in.close()


class FakeNetwork:
    """A set of in-memory peers; open each one with :meth:`open_transport`."""

    def __init__(
        self,
        *,
        seed: int = 0,
        drop: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        max_frame_size: int = MAX_FRAME_SIZE,
        max_message_size: int = MAX_GOSSIP_MESSAGE,
        message_buffer: int = 1024,
        max_connections: int = 12,
        message_buffer_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.seed = seed
        self.stats = FakeStats()
        self.max_frame_size = max_frame_size
        self.max_message_size = max_message_size
        self.message_buffer = message_buffer
        self.message_buffer_bytes = message_buffer_bytes
        self.max_connections = max_connections
        self._drop = 0.0
        self._delay = (0.0, 0.0)
        self.set_faults(drop=drop, delay=delay)
        self._nodes: dict[str, FakeTransport] = {}
        self._groups: dict[str, int] | None = None
        self._cut: set[frozenset[str]] = set()
        self._rngs: dict[tuple[str, str], random.Random] = {}
        self._counter = 0

    def set_faults(
        self, *, drop: float | None = None, delay: tuple[float, float] | None = None
    ) -> None:
        """Change the drop probability and/or the delay range, from now on."""
        if drop is not None:
            if not 0.0 <= drop <= 1.0:
                raise ValueError("drop is a probability")
            self._drop = drop
        if delay is not None:
            lo, hi = delay
            if not 0.0 <= lo <= hi:
                raise ValueError("delay is (min, max) seconds with 0 <= min <= max")
            self._delay = (lo, hi)

    def peers(self) -> list[str]:
        """Ids of every open transport."""
        return list(self._nodes)

    @asynccontextmanager
    async def open_transport(
        self, validator: Validator | None = None, *, peer_id: str | None = None
    ) -> AsyncIterator[FakeTransport]:
        """A new peer on this network for the duration of the block."""
        if peer_id is None:
            self._counter += 1
            peer_id = f"fake-{self._counter}"
        if peer_id in self._nodes:
            raise NetworkError(f"peer id {peer_id} is already in use")
        async with trio.open_nursery() as nursery:
            transport = FakeTransport(self, peer_id, validator, nursery)
            self._nodes[peer_id] = transport
            try:
                yield transport
            finally:
                for other in list(transport._links):
                    self._unlink(peer_id, other)
                del self._nodes[peer_id]
                transport._close()
                nursery.cancel_scope.cancel()

    # --- partitions ---------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: peers in different groups can no longer talk."""
        assignment: dict[str, int] = {}
        for index, group in enumerate(groups):
            for peer in group:
                if peer in assignment:
                    raise ValueError(f"{peer} is in two groups")
                assignment[peer] = index
        self._groups = assignment
        for a, node in list(self._nodes.items()):
            for b in list(node._links):
                if not self.reachable(a, b):
                    self._cut.add(frozenset((a, b)))
                    self._unlink(a, b)

    def heal(self, *, reconnect: bool = True) -> None:
        """End the partition; with ``reconnect``, restore the links it cut."""
        self._groups = None
        cut, self._cut = self._cut, set()
        if not reconnect:
            return
        for link in sorted(tuple(sorted(pair)) for pair in cut):
            a, b = link
            if a in self._nodes and b in self._nodes:
                try:
                    self._link(self._nodes[a], self._nodes[b])
                except NetworkError as exc:
                    log.debug("heal: not restoring %s-%s: %s", a, b, exc)

    def reachable(self, a: str, b: str) -> bool:
        if self._groups is None:
            return True
        rest = len(self._groups) + 1
        return self._groups.get(a, rest) == self._groups.get(b, rest)

    # --- links --------------------------------------------------------------

    def _link(self, a: FakeTransport, b: FakeTransport) -> None:
        if b.peer_id in a._links:
            return
        for node in (a, b):
            if len(node._links) >= self.max_connections:
                raise NetworkError(f"{node.peer_id} is at its connection limit")
        a._links[b.peer_id] = weakref.WeakSet()
        b._links[a.peer_id] = weakref.WeakSet()
        a._known.add(b.peer_id)
        b._known.add(a.peer_id)
        a._announce(b.peer_id)
        b._announce(a.peer_id)

    def _unlink(self, a: str, b: str) -> None:
        for x, y in ((a, b), (b, a)):
            node = self._nodes.get(x)
            if node is None:
                continue
            for stream in list(node._links.pop(y, ())):
                stream.break_now()

    def _congested(self, peer_id: str) -> bool:
        node = self._nodes.get(peer_id)
        return node is not None and node._congested()

    def _rng(self, sender: str, receiver: str) -> random.Random:
        key = (sender, receiver)
        rng = self._rngs.get(key)
        if rng is None:
            rng = self._rngs[key] = random.Random(f"{self.seed}:{sender}->{receiver}")
        return rng

    def _transmit(self, sender: FakeTransport, receiver_id: str, msg: _Message) -> None:
        receiver = self._nodes.get(receiver_id)
        if receiver is None:
            return
        self.stats.sent += 1
        rng = self._rng(sender.peer_id, receiver_id)
        if self._drop and rng.random() < self._drop:
            self.stats.dropped += 1
            return
        lo, hi = self._delay
        wait = rng.uniform(lo, hi) if hi > 0 else 0.0
        if wait > 0:
            receiver._nursery.start_soon(receiver._arrive_later, sender.peer_id, msg, wait)
        else:
            receiver._arrive(sender.peer_id, msg)


@dataclass(frozen=True, slots=True)
class _Message:
    origin: str
    seq: int
    data: bytes


class FakeTransport:
    """One peer of a :class:`FakeNetwork` (see :class:`~gossipmind.net.interface.Transport`)."""

    def __init__(
        self,
        network: FakeNetwork,
        peer_id: str,
        validator: Validator | None,
        nursery: trio.Nursery,
    ) -> None:
        self._network = network
        self._peer_id = peer_id
        self._validator = validator
        self._nursery = nursery
        self._links: dict[str, weakref.WeakSet[FakeStream]] = {}
        self._known: set[str] = set()
        self._handlers: dict[str, StreamHandler] = {}
        self._seen: dict[tuple[str, int], None] = {}
        self._stalled: set[str] = set()
        self._seq = 0
        self._msg_send, self._msg_recv = trio.open_memory_channel[tuple[str, bytes]](
            network.message_buffer
        )
        self._held = BufferBytes(network.message_buffer_bytes)
        self._conn_send, self._conn_recv = trio.open_memory_channel[str](1024)

    @property
    def peer_id(self) -> str:
        return self._peer_id

    def addrs(self) -> list[str]:
        return [f"/memory/{self._peer_id}/p2p/{self._peer_id}"]

    def peers(self) -> list[str]:
        return list(self._links)

    def peer_addrs(self, peer_id: str) -> list[str]:
        node = self._network._nodes.get(peer_id)
        if node is None or peer_id not in self._known:
            return []
        return node.addrs()

    async def connect(self, maddr: str) -> str:
        await trio.lowlevel.checkpoint()
        _, peer = split_p2p(maddr)
        if peer == self._peer_id:
            raise NetworkError("refusing to connect to ourselves")
        other = self._network._nodes.get(peer)
        if other is None:
            raise NetworkError(f"nobody listens at {maddr}")
        if not self._network.reachable(self._peer_id, peer):
            raise NetworkError(f"{peer} is unreachable (partition)")
        self._network._link(self, other)
        return peer

    async def disconnect(self, peer_id: str) -> None:
        await trio.lowlevel.checkpoint()
        self._network._unlink(self._peer_id, peer_id)

    async def publish(self, data: bytes) -> None:
        if len(data) > self._network.max_message_size:
            raise NetworkError(
                f"gossip message of {len(data)} bytes exceeds {self._network.max_message_size}"
            )
        await self._wait_for_room()
        self._seq += 1
        msg = _Message(self._peer_id, self._seq, bytes(data))
        self._remember(msg)
        for peer in list(self._links):
            self._network._transmit(self, peer, msg)

    async def _wait_for_room(self) -> None:
        """Back-pressure, as the libp2p transport: wait while a neighbour's buffer is
        over half full; a neighbour that does not drain within 5 s is skipped until
        it does."""
        deadline = trio.current_time() + STALL_TIMEOUT
        while True:
            congested = {p for p in self._links if self._network._congested(p)}
            self._stalled &= congested
            waiting = congested - self._stalled
            if not waiting:
                break
            if trio.current_time() >= deadline:
                self._stalled |= waiting
                break
            await trio.sleep(0.001)
        await trio.lowlevel.checkpoint()

    def _congested(self) -> bool:
        stats = self._msg_send.statistics()
        return bool(stats.current_buffer_used * 2 > stats.max_buffer_size)

    def messages(self) -> trio.MemoryReceiveChannel[tuple[str, bytes]]:
        return self._msg_recv

    def connections(self) -> trio.MemoryReceiveChannel[str]:
        return self._conn_recv

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        self._handlers[protocol] = handler

    async def open_stream(self, peer_id: str, protocol: str) -> Stream:
        await trio.lowlevel.checkpoint()
        if peer_id not in self._links:
            raise NetworkError(f"not connected to {peer_id}")
        other = self._network._nodes[peer_id]
        handler = other._handlers.get(protocol)
        if handler is None:
            raise NetworkError(f"{peer_id} does not speak {protocol}")
        pipe = _Pipe()
        a_send, b_recv = trio.open_memory_channel[bytes](STREAM_BUFFER)
        b_send, a_recv = trio.open_memory_channel[bytes](STREAM_BUFFER)
        size = self._network.max_frame_size
        mine = FakeStream(peer_id, protocol, a_send, a_recv, pipe, size)
        theirs = FakeStream(self._peer_id, protocol, b_send, b_recv, pipe, size)
        self._links[peer_id].add(mine)
        other._links[self._peer_id].add(theirs)
        other._nursery.start_soon(other._serve, handler, theirs)
        return mine

    # --- internals ----------------------------------------------------------

    async def _serve(self, handler: StreamHandler, stream: FakeStream) -> None:
        try:
            await handler(stream)
        except GossipmindError as exc:
            log.info("%s stream from %s failed: %s", stream.protocol, stream.remote_peer, exc)
            await stream.reset()
            return
        await stream.close()

    def _announce(self, peer_id: str) -> None:
        try:
            self._conn_send.send_nowait(peer_id)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("%s: connection event for %s not delivered", self._peer_id, peer_id)

    def _remember(self, msg: _Message) -> bool:
        key = (msg.origin, msg.seq)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > SEEN_LIMIT:
            del self._seen[next(iter(self._seen))]
        return True

    async def _arrive_later(self, sender: str, msg: _Message, wait: float) -> None:
        await trio.sleep(wait)
        if sender not in self._links:
            self._network.stats.lost_in_flight += 1
            return
        self._arrive(sender, msg)

    def _arrive(self, sender: str, msg: _Message) -> None:
        if not self._remember(msg) or msg.origin == self._peer_id:
            return
        stats = self._network.stats
        if self._validator is not None and not self._validator(msg.data):
            stats.rejected += 1
            return
        try:
            if self._held.admit(self._msg_send, len(msg.data)):
                self._msg_send.send_nowait((msg.origin, msg.data))
                self._held.sent(len(msg.data))
                stats.delivered += 1
            else:
                stats.overflowed += 1
        except trio.WouldBlock:
            stats.overflowed += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the node stopped reading gossip; still forward (it is a relay)
        for peer in list(self._links):
            if peer not in (sender, msg.origin):
                self._network._transmit(self, peer, msg)

    def _close(self) -> None:
        self._msg_send.close()
        self._conn_send.close()


def _conforms(transport: FakeTransport) -> Transport:
    return transport  # static check: FakeTransport implements Transport
