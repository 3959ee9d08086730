"""Inbound connections: tasks that end with their connection, and a bound on handshakes.

**Tasks that end with their connection** (a py-libp2p 0.8.1 workaround).

py-libp2p's swarm serves each inbound connection in a task of its TCP listener
that, once the connection is upgraded, waits until the *swarm* stops
(``Swarm._do_handle_inbound_connection`` ends in ``await
self.manager.wait_finished()``). The task, its frames and its inbound slot live
as long as the host: ~7 KiB for every inbound connection ever accepted, so a
peer that reconnects over and over grows a node's memory without limit
(``gossipmind testnet attack reconnect-flood``).

:func:`end_inbound_tasks_on_close` wraps the swarm's handler so that the task
ends once the connection's socket is closed: closing the socket stream (which
every way of closing the connection goes through: muxer, then security, then
raw connection) signals it, and a slow poll of the socket catches a close that
went around it. Only then is the waiting task cancelled, so nothing the
connection still uses is touched; its inbound slot is released on the way out.

**Handshakes in flight** (:func:`guard_handshakes`). From accept until its
security and muxer are up, an inbound connection costs a socket and a task, and
needs nothing from the dialer: no identity, not a byte. py-libp2p's only bound is
its inbound limiter, which refuses every connection past it: 256 idle TCP
connects from one host, reopened as the node closed them at its upgrade timeout
(10 s), locked every new peer out of the node (2 of 20 honest dials succeeded).
So the connections still in their handshake are counted per remote IP: an IP
with :data:`HANDSHAKES_PER_IP` of them has further ones closed on accept; and
when ``slots`` are in their handshake, a new connection makes room by closing
the oldest one of the IP that has the most (a peer dialling from its own IP is
the last to go). Loopback is one IP like any other: the cap is generous enough
for a testnet of 40 nodes on 127.0.0.1 dialling one bootstrap node at once.
"""

from __future__ import annotations

import itertools
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import trio

from gossipmind.net.streams import LIBP2P_IO_ERRORS

log = logging.getLogger(__name__)

POLL = 10.0  # seconds between two looks at the socket, in case close() was bypassed
HANDSHAKES_PER_IP = 64  # inbound connections in their handshake from one IP at once
# Seconds an inbound connection has for its security and muxer handshake (py-libp2p's
# default: 10 s): the dial timeout's default, past which an honest dialer gave up.
INBOUND_UPGRADE_TIMEOUT = 5.0
SHED_TIMEOUT = 5.0  # bound on closing a connection to make room (a close can hang)


def _socket_closed(read_write_closer: Any) -> bool:
    sock = getattr(getattr(read_write_closer, "stream", None), "socket", None)
    return sock is not None and sock.fileno() == -1


def end_inbound_tasks_on_close(swarm: Any) -> None:
    """Make ``swarm``'s inbound connection tasks end when their connection closes."""
    handle = swarm._handle_inbound_connection

    async def handle_until_closed(read_write_closer: Any, maddr: Any) -> None:
        closed = trio.Event()
        close = read_write_closer.close

        async def close_and_signal() -> None:
            try:
                await close()
            finally:
                closed.set()

        async def serve() -> None:
            try:
                await handle(read_write_closer, maddr)
            finally:
                closed.set()  # it returned by itself: refused, or the upgrade failed

        read_write_closer.close = close_and_signal
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            while not closed.is_set() and not _socket_closed(read_write_closer):
                with trio.move_on_after(POLL):
                    await closed.wait()
            nursery.cancel_scope.cancel()

    swarm._handle_inbound_connection = handle_until_closed


@dataclass(eq=False)
class Handshake:
    """An inbound connection from accept until its muxer is up (or it ends)."""

    ip: str
    conn: Any  # the raw ReadWriteCloser
    n: int  # its rank in accept order: smaller is older
    shed: bool = False  # closed to make room for a newer one


_CURRENT: ContextVar[Handshake | None] = ContextVar("gossipmind_inbound_handshake", default=None)


class HandshakeGuard:
    """The inbound connections in their handshake, per remote IP (see the module doc)."""

    def __init__(self, slots: int, per_ip: int) -> None:
        if slots < 1 or per_ip < 1:
            raise ValueError(f"handshake slots ({slots}) and per IP ({per_ip}) must be >= 1")
        self.slots, self.per_ip = slots, per_ip
        self._by_ip: dict[str, dict[int, Handshake]] = {}  # each in accept order
        self._count = 0
        self._rank = itertools.count()
        self.refused = 0  # closed on accept: their IP had per_ip handshakes going
        self.shed = 0  # closed to make room for a newer connection

    def handshaking(self, ip: str | None = None) -> int:
        """Connections in their handshake: all of them, or those from ``ip``."""
        return self._count if ip is None else len(self._by_ip.get(ip, ()))

    def admit(self, ip: str, conn: Any) -> tuple[Handshake | None, list[Handshake]]:
        """Count a new connection in: it (None: refused) and those it displaces."""
        if len(self._by_ip.get(ip, ())) >= self.per_ip:
            self.refused += 1
            return None, []
        victims = []
        while self._count >= self.slots:
            # the IP with the most handshakes going; of equals, the one that has
            # waited longest; and of its connections, the oldest
            busiest = max(
                self._by_ip.values(), key=lambda held: (len(held), -next(iter(held.values())).n)
            )
            victim = next(iter(busiest.values()))
            victim.shed = True
            self.forget(victim)
            victims.append(victim)
        entry = Handshake(ip, conn, next(self._rank))
        self._by_ip.setdefault(ip, {})[entry.n] = entry
        self._count += 1
        self.shed += len(victims)
        return entry, victims

    def forget(self, entry: Handshake) -> None:
        """No longer in its handshake (done, failed, closed or shed); idempotent."""
        held = self._by_ip.get(entry.ip)
        if held is None or held.pop(entry.n, None) is None:
            return
        self._count -= 1
        if not held:
            del self._by_ip[entry.ip]


_ADDRESS_ERRORS: tuple[type[BaseException], ...] = (AttributeError, *LIBP2P_IO_ERRORS)


def _remote_ip(conn: Any) -> str:
    try:
        address = conn.get_remote_address()
    except _ADDRESS_ERRORS:
        return ""
    return str(address[0]) if address else ""


async def _close(conn: Any) -> None:
    with trio.move_on_after(SHED_TIMEOUT):
        try:
            await conn.close()
        except LIBP2P_IO_ERRORS as exc:
            log.debug("closing an inbound connection: %r", exc)


async def _shed(victim: Handshake) -> None:
    """Close ``victim``'s socket (shielded: the room is made even if our own
    connection drops). Its handshake then fails on its next read like any dropped
    dial, and its handler unwinds by itself. The new connection does not wait for
    that: under a flood it took ~0.5 s, a delay for the honest dial that made the
    room (``net/host.py`` sizes the inbound limiter for as many handlers unwinding
    as there are slots).

    Only the socket is closed, not the connection through its ``close``, which
    :func:`end_inbound_tasks_on_close` turns into a cancellation of the handler:
    cancelled inside py-libp2p's cleanup, the handler skipped releasing the
    connection it had counted in py-libp2p's resource manager, and after ~750
    connections shed that count reached its limit: every inbound connection was
    denied from then on.
    """
    socket_stream = getattr(victim.conn, "stream", None)
    with trio.CancelScope(shield=True, deadline=trio.current_time() + SHED_TIMEOUT):
        if isinstance(socket_stream, trio.abc.AsyncResource):
            await socket_stream.aclose()
        else:
            await _close(victim.conn)


def guard_handshakes(swarm: Any, slots: int, per_ip: int | None = None) -> HandshakeGuard:
    """Bound ``swarm``'s inbound connections in their handshake (see the module doc):
    ``slots`` in all, ``per_ip`` (default :data:`HANDSHAKES_PER_IP`) from one IP.

    Wraps the swarm's inbound handler (outside :func:`end_inbound_tasks_on_close`)
    and its upgrader's muxer step, which ends a connection's handshake.
    """
    guard = HandshakeGuard(slots, HANDSHAKES_PER_IP if per_ip is None else per_ip)
    handle = swarm._handle_inbound_connection
    upgrade = swarm.upgrader.upgrade_connection

    async def upgrade_and_count_out(conn: Any, peer_id: Any) -> Any:
        muxed = await upgrade(conn, peer_id)
        entry = _CURRENT.get()  # set in the task of the inbound connection
        if entry is not None:
            guard.forget(entry)
        return muxed

    async def handle_guarded(read_write_closer: Any, maddr: Any) -> None:
        ip = _remote_ip(read_write_closer)
        entry, victims = guard.admit(ip, read_write_closer)
        if entry is None:
            log.debug("inbound connection from %s refused: %d handshakes", ip, guard.per_ip)
            await _close(read_write_closer)
            return
        token = _CURRENT.set(entry)
        try:
            for victim in victims:
                log.debug("inbound connection from %s closed to make room", victim.ip)
                await _shed(victim)
            if not entry.shed:  # it may itself have been displaced meanwhile
                await handle(read_write_closer, maddr)
        finally:
            guard.forget(entry)
            _CURRENT.reset(token)

    swarm._handle_inbound_connection = handle_guarded
    swarm.upgrader.upgrade_connection = upgrade_and_count_out
    return guard
