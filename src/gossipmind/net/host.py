"""The libp2p adapter: :func:`open_libp2p_transport` and :class:`Libp2pTransport`.

Everything py-libp2p 0.8.1 needs to behave (LIBP2P_NOTES.md) is applied here or in
:mod:`~gossipmind.net.hostsetup` (identity, logging, host construction),
:mod:`~gossipmind.net.pubsub` / :mod:`~gossipmind.net.streams`:

* **identity** from the node's Ed25519 seed (``libp2p.crypto.ed25519``): the peer
  id is stable across restarts and embeds the node's public key;
* **Noise only** (§2): the default security options accept unencrypted plaintext;
* **TCP only** (§9); a listen failure is only *logged* by py-libp2p, so we check
  that the host got an address and raise :class:`NetworkError` otherwise;
* ``ConnectionConfig(max_connections_per_peer=1)`` (§1: otherwise every dial waits
  ~250 ms) and ``max_connections`` = ``degree_high`` (§5): the swarm refuses
  connections past the cap in both directions;
* **inbound handshakes** are bounded (:mod:`~gossipmind.net.inbound`): 256 at
  once, 64 from one remote IP, 5 s each; when all are taken, a new connection
  closes the oldest of the IP with the most, so idle connects cannot lock
  peers out;
* **a dial goes to the address asked for**: py-libp2p dials one TCP address per
  peer, the first its peerstore holds, whatever address ``connect`` was given,
  and each dial keeps the old ones alive (a 120 s TTL, renewed). A peer that
  came back at another address (a restart on an ephemeral port, a new IP)
  could never be dialled again. :meth:`Libp2pTransport.connect` replaces a
  peer's addresses with the one given before it dials;
* py-libp2p's **auto-connector** is stopped: it redials every peer in the
  peerstore when below its watermark, which would undo :meth:`disconnect` and
  partitions; connection policy belongs to the node (peer exchange);
* **logs** (§6): the ``libp2p`` logger is silenced below CRITICAL unless
  ``TransportConfig.debug``; a swarm module that logs through the *root* logger
  (``logging.debug(...)``, which also runs ``logging.basicConfig()`` behind the
  application's back) is redirected to a ``libp2p.*`` logger;
* **Yamux window updates**: py-libp2p 0.8.1 sends a WINDOW_UPDATE frame (an
  encrypted write and a syscall) after every read of a stream; with
  ``PY_YAMUX_RELEASE_ON_READ=0`` it sends about half as many (a read that
  leaves the window at its target sends none; the rest are batched up to half
  a window). We set that default (an operator's own setting wins): the CPU
  per op of the throughput bench fell by ~15 %;
* **structured concurrency** (§7): ``host.run()`` ⊃ pubsub service ⊃ gossipsub
  service ⊃ our nursery, strictly nested, in a task of their own that the
  caller's cancellation does not reach once started; leaving the block stops it
  in order (connections, then the host, then the services; see
  :mod:`~gossipmind.net.lifecycle` for why: a cancelled close in py-libp2p leaks
  the socket). Whatever crosses them (an exception from the ``async with``
  body, Ctrl-C) comes out wrapped in nested exception groups; a group holding
  a single exception is unwrapped, so the caller sees a plain
  ``KeyboardInterrupt`` or its own error. Several concurrent failures still
  arrive as a group: use ``except*``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.peer.peerstore import PeerStoreError
from libp2p.tools.anyio_service import background_trio_service

from gossipmind.core.errors import GossipmindError, NetworkError
from gossipmind.net.hostsetup import (
    _NO_IPS,
    _new_host,
    _parse_tcp,
    configure_logging,
    expand_unspecified,
    key_pair_from_seed,
    local_ips,
    peer_id_from_seed,
)
from gossipmind.net.inbound import (
    HandshakeGuard,
    end_inbound_tasks_on_close,
    guard_handshakes,
)
from gossipmind.net.interface import (
    Stream,
    StreamHandler,
    TransportConfig,
    Validator,
    split_p2p,
)
from gossipmind.net.lifecycle import CLOSE_TIMEOUT, ConnectionNotifee, close_host
from gossipmind.net.pubsub import (
    Backpressure,
    GossipStats,
    adapt_validator,
    new_pubsub,
    pump_subscription,
)
from gossipmind.net.streams import LIBP2P_IO_ERRORS, Libp2pStream

if TYPE_CHECKING:
    from trio_typing import TaskStatus  # trio-stubs (installed with libp2p) shadow trio's own

__all__ = [
    "CONNECTION_BUFFER",
    "INBOUND_SLOTS",
    "Libp2pTransport",
    "configure_logging",
    "expand_unspecified",
    "key_pair_from_seed",
    "local_ips",
    "open_libp2p_transport",
    "peer_id_from_seed",
]

log = logging.getLogger(__name__)

CONNECTION_BUFFER = 1024

# Inbound connections in their handshake at once (net/inbound.py: at most
# HANDSHAKES_PER_IP from one IP; when all are taken, a new one closes the oldest
# of the IP with the most). Without a bound, idle TCP connects (each held up to
# the upgrade timeout) could exhaust the process's file descriptors.
INBOUND_SLOTS = 256


def _parse_peer_id(peer_id: str) -> Any:
    try:
        return ID.from_base58(peer_id)
    except ValueError as exc:
        raise NetworkError(f"not a peer id: {peer_id!r}") from exc


# --- the transport --------------------------------------------------------------


class Libp2pTransport:
    """:class:`~gossipmind.net.interface.Transport` over a running py-libp2p host.

    Obtain one from :func:`open_libp2p_transport`; it is only usable inside that
    context.
    """

    def __init__(
        self,
        host: Any,
        pubsub: Any,
        config: TransportConfig,
        messages: trio.MemoryReceiveChannel[tuple[str, bytes]],
        connections: trio.MemoryReceiveChannel[str],
    ) -> None:
        self._host = host
        self._pubsub = pubsub
        self._config = config
        self._messages = messages
        self._connections = connections
        self._peer_id = str(host.get_id().to_base58())
        self.stats = GossipStats()
        self.handshakes: HandshakeGuard | None = None  # inbound ones, once the host runs
        self._backpressure = Backpressure(
            pubsub, config.publish_queue_high, config.publish_stall_timeout, self.stats
        )

    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def config(self) -> TransportConfig:
        return self._config

    def addrs(self) -> list[str]:
        return [_with_p2p(str(a), self._peer_id) for a in self._host.get_addrs()]

    def peers(self) -> list[str]:
        return [str(p.to_base58()) for p in self._host.get_connected_peers()]

    def peer_addrs(self, peer_id: str) -> list[str]:
        pid = _parse_peer_id(peer_id)
        try:
            known = self._host.get_peerstore().addrs(pid)
        except PeerStoreError:
            return []  # a peer we never heard of
        out: list[str] = []
        for addr in known:
            text = _with_p2p(str(addr), peer_id)
            dialable = "/tcp/" in text and "/p2p-circuit" not in text
            if dialable and expand_unspecified(text, _NO_IPS) and text not in out:
                out.append(text)
        return out

    def outbound_queue_depth(self) -> int:
        """Deepest per-peer outbound gossip queue (py-libp2p drops at 32)."""
        return self._backpressure.depth()

    async def connect(self, maddr: str) -> str:
        _, peer = split_p2p(maddr)
        if peer == self._peer_id:
            raise NetworkError("refusing to connect to ourselves")
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(maddr))
        except ValueError as exc:
            raise NetworkError(f"bad peer address {maddr!r}: {exc}") from exc
        connected = set(self.peers())
        if peer in connected:  # py-libp2p would store this address and dial nothing: the
            return peer  # peer may be connected from elsewhere (it moved), this one dead
        if len(connected) >= self._config.connection_limit:
            raise NetworkError(f"connection limit ({self._config.connection_limit}) reached")
        # py-libp2p refuses to dial a peer whose last dial failed for 60 s (its
        # "negative cache"): a peer that restarts in 5 s would stay unreachable for a
        # minute. The node paces its own dials, so each explicit dial is a fresh try.
        self._host.get_network().unblock_peer(info.peer_id)
        self._host.get_peerstore().clear_addrs(info.peer_id)  # dial this one (docstring)
        try:
            with trio.fail_after(self._config.dial_timeout):
                await self._host.connect(info)
        except trio.TooSlowError as exc:
            raise NetworkError(f"dialing {maddr} timed out") from exc
        except LIBP2P_IO_ERRORS as exc:
            raise NetworkError(f"cannot connect to {maddr}: {exc}") from exc
        return str(info.peer_id.to_base58())

    async def disconnect(self, peer_id: str) -> None:
        pid = _parse_peer_id(peer_id)
        # Shielded and bounded: a close cancelled halfway leaves py-libp2p with a
        # connection that reports itself closed while its socket stays open.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
            try:
                await self._host.disconnect(pid)
            except LIBP2P_IO_ERRORS as exc:
                raise NetworkError(f"disconnecting {peer_id}: {exc}") from exc

    async def publish(self, data: bytes) -> None:
        if len(data) > self._config.max_message_size:
            raise NetworkError(
                f"gossip message of {len(data)} bytes exceeds {self._config.max_message_size}"
            )
        await self._backpressure.wait()
        try:
            await self._pubsub.publish(self._config.topic, bytes(data))
        except LIBP2P_IO_ERRORS as exc:
            raise NetworkError(f"publish failed: {exc}") from exc
        self.stats.published += 1

    def messages(self) -> trio.MemoryReceiveChannel[tuple[str, bytes]]:
        return self._messages

    def connections(self) -> trio.MemoryReceiveChannel[str]:
        return self._connections

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        max_frame = self._config.max_frame_size

        async def _serve(raw: Any) -> None:
            peer = str(raw.muxed_conn.peer_id.to_base58())
            stream = Libp2pStream(raw, peer, protocol, max_frame_size=max_frame)
            try:
                await handler(stream)
            except GossipmindError as exc:
                # A peer that breaks the protocol (or a dead link) must not take
                # down the connection's task group: reset its stream and move on.
                log.info("%s stream from %s failed: %s", protocol, peer, exc)
                with trio.move_on_after(CLOSE_TIMEOUT):  # a yamux close can hang
                    await stream.reset()
                return
            with trio.move_on_after(CLOSE_TIMEOUT):
                await stream.close()

        self._host.set_stream_handler(TProtocol(protocol), _serve)

    async def open_stream(self, peer_id: str, protocol: str) -> Stream:
        pid = _parse_peer_id(peer_id)
        if peer_id not in self.peers():
            raise NetworkError(f"not connected to {peer_id}")
        try:
            with trio.fail_after(self._config.dial_timeout):
                raw = await self._host.new_stream(pid, [TProtocol(protocol)])
        except trio.TooSlowError as exc:
            raise NetworkError(f"opening {protocol} to {peer_id} timed out") from exc
        except LIBP2P_IO_ERRORS as exc:
            raise NetworkError(f"cannot open {protocol} to {peer_id}: {exc}") from exc
        return Libp2pStream(raw, peer_id, protocol, max_frame_size=self._config.max_frame_size)


def _with_p2p(addr: str, peer_id: str) -> str:
    return addr if "/p2p/" in addr else f"{addr}/p2p/{peer_id}"


class _Stack:
    """The libp2p stack of one transport, run as a task: ``host.run()`` ⊃ pubsub
    service ⊃ gossipsub service ⊃ the delivery pump (§7: strictly nested).

    Once started, the task is shielded from its surroundings: only :meth:`stop`
    (or a failure inside the stack) ends it. A cancelled caller therefore never
    cancels libp2p's own teardown, which would leave connections half-closed with
    their sockets open (see :mod:`~gossipmind.net.lifecycle`); instead the stack
    closes its connections and its host in order, then unwinds within
    ``CLOSE_TIMEOUT``.
    """

    def __init__(
        self,
        host: Any,
        router: Any,
        pubsub: Any,
        transport: Libp2pTransport,
        validator: Validator,
        notifee: ConnectionNotifee,
        messages: trio.MemorySendChannel[tuple[str, bytes]],
        connections: trio.MemorySendChannel[str],
    ) -> None:
        self._host = host
        self._router = router
        self._pubsub = pubsub
        self._transport = transport
        self._validator = validator
        self._notifee = notifee
        self._messages = messages
        self._connections = connections
        self._stop = trio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, listen: Any, *, task_status: TaskStatus[None]) -> None:
        host, pubsub, config = self._host, self._pubsub, self._transport.config
        # py-libp2p 0.8.1 takes an "inbound slot" per inbound connection and holds it
        # until the *swarm* stops, not the connection: a node would accept only 12
        # inbound connections in its life. With the tasks ending with their sockets
        # (below), the slots hold connections in their handshake (INBOUND_SLOTS at
        # most: the guard makes room first), as many again closed to make room and
        # still unwinding, and live ones (connection_limit at most). (Replaced
        # before the swarm runs: no slot is held yet.)
        swarm = host.get_network()
        slots = 2 * INBOUND_SLOTS + config.connection_limit
        swarm._inbound_limiter = trio.CapacityLimiter(slots)
        end_inbound_tasks_on_close(swarm)  # their tasks outlived them
        self._transport.handshakes = guard_handshakes(swarm, INBOUND_SLOTS)
        with trio.CancelScope() as scope:
            async with host.run(listen_addrs=[listen]):
                try:
                    # py-libp2p logs listen failures (port in use...) and carries on.
                    if not host.get_addrs():
                        raise NetworkError(f"could not listen on {config.listen}")
                    await host.get_network().auto_connector.stop()
                    async with (
                        background_trio_service(pubsub),
                        background_trio_service(self._router),
                    ):
                        await pubsub.wait_until_ready()
                        pubsub.set_topic_validator(
                            config.topic, adapt_validator(self._validator), is_async_validator=False
                        )
                        subscription = await pubsub.subscribe(config.topic)
                        self_id = host.get_id().to_bytes()
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(
                                pump_subscription,
                                subscription,
                                self_id,
                                self._messages,
                                self._transport.stats,
                                self._transport.config.message_buffer_bytes,
                            )
                            try:
                                scope.shield = True
                                task_status.started()
                                await self._stop.wait()
                            finally:
                                nursery.cancel_scope.cancel()
                                self._messages.close()
                                self._connections.close()
                                # Connections first, while pubsub still runs: a
                                # message read after its service stopped raises
                                # RuntimeError ("Nursery is closed") in the swarm.
                                await close_host(host, self._notifee)
                                # Then services get a bounded time to unwind.
                                scope.deadline = trio.current_time() + CLOSE_TIMEOUT
                finally:
                    await close_host(host, self._notifee)  # idempotent; failed startups


@asynccontextmanager
async def open_libp2p_transport(
    config: TransportConfig, validator: Validator
) -> AsyncIterator[Libp2pTransport]:
    """Run a libp2p host, subscribed to ``config.topic``, for the duration of the block.

    ``validator(data) -> bool`` runs synchronously on every gossip message, ours
    included, before it is delivered or forwarded: see
    :func:`gossipmind.net.gossip.make_validator`.

    The host runs in a task of its own that the block's cancellation does not
    reach: leaving the block, even from a cancelled scope, closes every
    connection and socket first (bounded in time), then stops the host.
    """
    configure_logging(config.debug)
    listen = _parse_tcp(config.listen, "listen")
    host = _new_host(config, listen)
    router, pubsub = new_pubsub(host, config)
    messages_send, messages_recv = trio.open_memory_channel[tuple[str, bytes]](
        config.message_buffer
    )
    conn_send, conn_recv = trio.open_memory_channel[str](CONNECTION_BUFFER)
    notifee = ConnectionNotifee(conn_send, host)
    host.get_network().register_notifee(notifee)
    transport = Libp2pTransport(host, pubsub, config, messages_recv, conn_recv)
    stack = _Stack(host, router, pubsub, transport, validator, notifee, messages_send, conn_send)
    sole: BaseException | None = None
    started = False
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(stack.run, listen)
            started = True
            try:
                yield transport
            finally:
                stack.stop()
    except BaseExceptionGroup as group:
        sole = _sole_exception(group)
        if sole is None:
            raise
    finally:
        # Pubsub's seen-message cache runs a sweeper *thread* nobody stops.
        pubsub.seen_messages.stop()
    if sole is not None and not started and isinstance(sole, LIBP2P_IO_ERRORS):
        raise NetworkError(f"starting the libp2p host failed: {sole!r}") from sole
    if sole is not None:
        # Nested task groups wrap whatever crosses them (an error of the node's,
        # KeyboardInterrupt): hand a lone exception back unwrapped.
        raise sole


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The only leaf exception of (nested) groups, or None if there are several."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner
