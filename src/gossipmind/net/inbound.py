"""Inbound connection tasks that end with their connection (a py-libp2p 0.8.1 workaround).

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
"""

from __future__ import annotations

from typing import Any

import trio

POLL = 10.0  # seconds between two looks at the socket, in case close() was bypassed


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
