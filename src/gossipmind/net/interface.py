"""The transport interface the node drives, shared by the libp2p adapter and the fake.

This module imports neither libp2p nor trio internals beyond channel types, so the
node, the sync property tests and the SDK can use it without paying for
``import libp2p`` (0.5-0.75 s).

Two implementations exist:

* :func:`gossipmind.net.host.open_libp2p_transport` — real libp2p over TCP;
* :class:`gossipmind.net.fake.FakeNetwork` — in-memory, with seeded faults.

Semantics both honour:

* **Peer ids** are opaque strings (base58 libp2p ids for the real transport).
* **Gossip** (:meth:`Transport.publish`) is best effort: messages may be lost,
  delayed or reordered; anti-entropy sync is what guarantees delivery. Every message
  handed to :meth:`Transport.messages` passed the validator given when the
  transport was opened; messages the validator rejects are neither delivered nor
  forwarded. A node never receives its own messages.
* **Streams** carry length-prefixed frames of at most ``max_frame_size`` bytes,
  reliably and in order, until closed or broken. :meth:`Stream.receive` raises
  :class:`StreamEOF` when the stream ended between frames, :class:`FrameTooLarge`
  for an oversized frame (either direction), :class:`TruncatedFrame` when it
  ended inside a frame, and :class:`NetworkError` for anything else (our own
  reset...). py-libp2p reports a remote
  *reset* or a lost connection as a clean end of stream, so ``StreamEOF`` does
  not mean "the peer finished": a protocol must know when a stream is supposed
  to end and treat an early ``StreamEOF`` as a failure. Streams have no built-in
  timeouts: put a ``trio.fail_after`` at the call site.
* **Stream handlers** run once per inbound stream; the stream is closed when the
  handler returns. A :class:`~gossipmind.core.errors.GossipmindError` escaping a
  handler (a misbehaving peer) resets the stream and is logged, never propagated;
  any other exception is a bug and propagates.
* **Connections** are announced once per new connection, in both directions, on
  :meth:`Transport.connections`, so the node can start a sync on each.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from gossipmind.core.errors import NetworkError

MAX_FRAME_SIZE = 1024 * 1024
"""Largest stream frame (1 MiB): py-libp2p drops pubsub RPCs above 1 MiB and yamux
writers die if a reader stalls, so nothing larger is ever useful."""

MAX_GOSSIP_MESSAGE = 256 * 1024
"""Largest gossip message (one batch of ops), see :mod:`gossipmind.net.gossip`."""

SYNC_PROTOCOL = "/gossipmind/sync/1.0.0"

DEFAULT_LISTEN = "/ip4/127.0.0.1/tcp/0"


class FrameTooLarge(NetworkError):
    """A stream frame exceeds the maximum frame size (sent or announced by the peer)."""


class TruncatedFrame(NetworkError):
    """The stream ended inside a frame: in its length prefix or its body."""


class StreamEOF(NetworkError):
    """The stream ended at a frame boundary: closed, reset, or its connection lost."""


class Stream(Protocol):
    """A bidirectional stream of frames with one remote peer."""

    @property
    def remote_peer(self) -> str: ...

    @property
    def protocol(self) -> str: ...

    async def send(self, frame: bytes) -> None:
        """Send one frame; :class:`FrameTooLarge` if over the limit, else NetworkError."""
        ...

    async def receive(self) -> bytes:
        """Next frame; :class:`StreamEOF` at the end of the stream, NetworkError otherwise."""
        ...

    async def close(self) -> None:
        """Close our sending side (the remote reads :class:`StreamEOF`). Idempotent."""
        ...

    async def reset(self) -> None:
        """Abort the stream in both directions. Idempotent."""
        ...


StreamHandler = Callable[[Stream], Awaitable[None]]
Validator = Callable[[bytes], bool]


class Transport(Protocol):
    """What the node needs from the network: gossip, streams and connections."""

    @property
    def peer_id(self) -> str: ...

    def addrs(self) -> list[str]:
        """Our dialable multiaddrs, each ending in ``/p2p/<peer_id>``."""
        ...

    async def connect(self, maddr: str) -> str:
        """Connect to ``maddr`` (must end in ``/p2p/<id>``); return the peer id."""
        ...

    async def disconnect(self, peer_id: str) -> None:
        """Close the connection to ``peer_id`` (no error if not connected)."""
        ...

    def peers(self) -> list[str]:
        """Currently connected peers."""
        ...

    def peer_addrs(self, peer_id: str) -> list[str]:
        """Known dialable addresses of ``peer_id`` (for peer exchange), with ``/p2p/``."""
        ...

    async def publish(self, data: bytes) -> None:
        """Gossip ``data`` on the network's topic; waits while the network is congested."""
        ...

    def messages(self) -> trio.MemoryReceiveChannel[tuple[str, bytes]]:
        """``(origin_peer, data)`` of every validated gossip message (one consumer)."""
        ...

    def connections(self) -> trio.MemoryReceiveChannel[str]:
        """Peer id of every new connection, inbound or outbound (one consumer)."""
        ...

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        """Serve inbound streams of ``protocol`` with ``handler``."""
        ...

    async def open_stream(self, peer_id: str, protocol: str) -> Stream:
        """Open a stream to a connected peer; NetworkError if impossible."""
        ...


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Configuration of the libp2p transport.

    ``seed`` is the node's 32-byte Ed25519 seed: the libp2p identity derives from
    it, so the peer id is stable across restarts. ``topic`` is the network's one
    gossip topic (the node uses ``gossipmind/<net-id-hex>/ops/1``).
    """

    seed: bytes
    topic: str
    listen: str = DEFAULT_LISTEN
    announce: tuple[str, ...] = ()
    """Addresses to advertise instead of the listen address (``/ip4/<public-ip>/tcp/<port>``,
    for a node behind NAT or a port forward). Without it a wildcard listen address
    (``0.0.0.0``) is advertised as loopback plus the primary interface address."""
    debug: bool = False
    """Let libp2p log at DEBUG (propagating to the root logger) instead of silencing it."""
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval: int = 1
    max_connections: int | None = None
    """Hard cap on connections (both directions); ``None`` means ``degree_high``,
    because gossipsub starves peers outside the mesh (LIBP2P_NOTES §5)."""
    dial_timeout: float = 5.0
    max_frame_size: int = MAX_FRAME_SIZE
    max_message_size: int = MAX_GOSSIP_MESSAGE
    publish_queue_high: int = 8
    """Back-pressure: publish waits while a peer's outbound queue (32 max) holds more."""
    publish_stall_timeout: float = 5.0
    """Give up waiting on a peer whose queue stays deep this long (it will drop)."""
    message_buffer: int = 1024
    """Validated messages buffered for the node before gossip drops new ones."""
    message_buffer_bytes: int = 64 * 1024 * 1024
    """... and the bytes they may hold (1024 full-size messages would be 256 MiB)."""
    seqno_start: int = 0
    """The first gossip seqno; 0: the Unix time in ns. A node passes the start of a
    span it reserved durably (store/seqnos.py), so that a clock stepped back
    across a restart cannot make it reuse a message id (sync §2)."""

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("TransportConfig.seed must be 32 bytes")
        if not self.topic:
            raise ValueError("TransportConfig.topic must not be empty")
        if not 0 < self.degree_low <= self.degree <= self.degree_high:
            raise ValueError("need 0 < degree_low <= degree <= degree_high")
        if self.max_frame_size < 1 or self.max_message_size < 1 or self.message_buffer_bytes < 1:
            raise ValueError("size limits must be positive")
        if self.connection_limit < 1:
            raise ValueError("max_connections must be at least 1")
        if not 0 <= self.seqno_start < 1 << 64:
            raise ValueError("seqno_start must fit in 8 bytes")

    @property
    def connection_limit(self) -> int:
        return self.max_connections if self.max_connections is not None else self.degree_high


def split_p2p(maddr: str) -> tuple[str, str]:
    """Split ``.../p2p/<id>`` into (transport part, peer id); NetworkError if absent."""
    head, sep, peer = maddr.rpartition("/p2p/")
    if not sep or not peer or "/" in peer:
        raise NetworkError(f"address must end in /p2p/<peer-id>: {maddr!r}")
    return head, peer


class BufferBytes:
    """Bounds the bytes a FIFO memory channel buffers, from the sending side alone.

    The buffer holds exactly the last ``current_buffer_used`` messages sent (the
    consumer takes them oldest first), so the sizes of recent sends are enough
    to know what it holds. One message is always admitted into an empty buffer.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sizes: deque[int] = deque()
        self._held = 0

    def admit(self, send: trio.MemorySendChannel[Any], size: int) -> bool:
        """Whether a message of ``size`` bytes fits beside what ``send`` buffers now."""
        buffered = send.statistics().current_buffer_used
        while len(self._sizes) > buffered:
            self._held -= self._sizes.popleft()
        return buffered == 0 or self._held + size <= self.limit

    def sent(self, size: int) -> None:
        """Note a message sent (buffered, or handed to a waiting consumer)."""
        self._sizes.append(size)
        self._held += size
