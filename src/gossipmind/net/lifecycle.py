"""Connection bookkeeping and a leak-free shutdown of a py-libp2p host.

Why (py-libp2p 0.8.1, read in its source and observed): ``SwarmConn.close()``
marks the connection closed *first*, then closes the muxer, and ``Yamux.close()``
takes a lock and writes GO_AWAY before it closes the secured connection (and
with it the socket). A close cancelled at one of those awaits leaves a connection
that reports itself closed while its socket is still open, and every later
``close()`` (``Swarm.close()``, ``host.close()``) returns at once. The swarm's
own exit path (``Swarm.run``'s ``finally``) closes its connections while
cancelled whenever the caller's scope is cancelled (a node's nursery, Ctrl-C), so
stopping hosts that way left sockets open until garbage collection:
``ResourceWarning: unclosed <socket.socket ...>``.

So, here:

* :class:`ConnectionNotifee` remembers every connection the swarm registered
  (both directions, duplicates from simultaneous dials included) until the swarm
  reports it disconnected, which it does only once the muxer is closed;
* :func:`close_host` closes every connection concurrently, then the host, all
  shielded and bounded in time; then, for any remembered connection whose muxer
  is still open, closes its secured connection directly (that path has no await
  before the socket is closed, so it cannot be cut short).

:func:`gossipmind.net.host.open_libp2p_transport` also keeps the caller's
cancellation away from the libp2p stack until this has run.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.abc import INotifee

from gossipmind.net.streams import LIBP2P_IO_ERRORS

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 3.0


class ConnectionNotifee(INotifee):
    """Announces every newly connected peer (both directions) on a channel, and
    remembers each open connection for :func:`close_host`.

    Announced once per peer, not per connection: when two peers dial each other
    at the same moment py-libp2p keeps both connections (``max_connections_per_peer``
    does not trim them), and the node should still see one new peer.
    """

    def __init__(self, send: trio.MemorySendChannel[str], host: Any = None) -> None:
        self._send = send
        self._host = host  # to identify a peer again (see disconnected)
        self._live: set[str] = set()
        self._conns: dict[int, Any] = {}
        self.dropped = 0

    def connections(self) -> list[Any]:
        """Connections registered and not yet reported disconnected."""
        return list(self._conns.values())

    async def connected(self, network: Any, conn: Any) -> None:
        self._conns[id(conn)] = conn
        peer = str(conn.muxed_conn.peer_id.to_base58())
        if peer in self._live:
            return
        self._live.add(peer)
        try:
            self._send.send_nowait(peer)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the node stopped listening for connections: nothing to announce to

    async def disconnected(self, network: Any, conn: Any) -> None:
        self._conns.pop(id(conn), None)
        peer_id = conn.muxed_conn.peer_id
        if not network.connections.get(peer_id):
            self._live.discard(str(peer_id.to_base58()))
            # py-libp2p identifies a peer only if the peerstore has no protocols
            # cached for it: one back at another port kept its old address, which
            # peer exchange then shared. Forget them, so it is identified again.
            self._forget_protocols(network, peer_id)
        elif self._host is not None and not getattr(self._host, "_closed", False):
            # Another connection stays: the peer came back (another IP or port)
            # before this one was found dead, and py-libp2p did not identify the
            # new one (protocols cached), so its new address was never learned.
            # Identify it now, on a connection that is left.
            self._forget_protocols(network, peer_id)
            getattr(self._host, "_identified_peers", {}).pop(peer_id, None)
            schedule = getattr(self._host, "_schedule_identify", None)
            if schedule is not None:
                schedule(peer_id, reason="a connection closed, another stays")
        await trio.lowlevel.checkpoint()

    @staticmethod
    def _forget_protocols(network: Any, peer_id: Any) -> None:
        try:
            network.peerstore.clear_protocol_data(peer_id)
        except Exception as exc:  # noqa: BLE001 - best effort: a peer it never held
            log.debug("clearing the protocols of %s: %r", peer_id, exc)

    async def opened_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: Any, maddr: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: Any, maddr: Any) -> None:
        await trio.lowlevel.checkpoint()


def _all_connections(host: Any, notifee: ConnectionNotifee) -> list[Any]:
    found = {id(c): c for c in host.get_network().get_connections()}
    for conn in notifee.connections():
        found.setdefault(id(conn), conn)
    return list(found.values())


async def _close_connection(conn: Any) -> None:
    try:
        await conn.close()
    except LIBP2P_IO_ERRORS as exc:
        # Tearing down: a connection that fails to close is released below.
        log.debug("closing a libp2p connection: %r", exc)


async def _release_socket(conn: Any) -> None:
    """Close the secured connection under a muxer that is still open."""
    muxed = conn.muxed_conn
    if muxed.is_closed:
        return
    secured = getattr(muxed, "secured_conn", None)
    if secured is None:
        log.warning("cannot release a %s connection: no secured_conn", type(muxed).__name__)
        return
    log.debug("releasing the socket of a half-closed connection to %s", muxed.peer_id)
    try:
        await secured.close()
    except LIBP2P_IO_ERRORS as exc:
        log.debug("closing a secured connection: %r", exc)


async def close_host(host: Any, notifee: ConnectionNotifee) -> None:
    """Close every connection, then the host (listeners, swarm), then release any
    socket a cancelled close left open. Shielded, each step bounded in time;
    idempotent."""
    with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
        # Concurrently: each SwarmConn.close() sleeps 0.2 s, and the swarm
        # closes its connections one after the other.
        async with trio.open_nursery() as nursery:
            for conn in _all_connections(host, notifee):
                nursery.start_soon(_close_connection, conn)
        try:
            await host.close()
        except LIBP2P_IO_ERRORS as exc:
            log.debug("closing the libp2p host: %r", exc)
    with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
        for conn in _all_connections(host, notifee):
            await _release_socket(conn)
