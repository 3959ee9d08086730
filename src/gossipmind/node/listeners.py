"""Listener channels (``Node.subscribe``, ``Node.fix_events``) that cannot leak.

A listener's channel used to be dropped only when a send to it failed, so a
client that connected to ``GET /v1/events`` and went away left its channel
behind until the next fix status change — forever on a quiet network. Now a
listener whose receive side is closed (or was garbage-collected unclosed) is
pruned each time one is added and each time events are sent, and at most
:data:`MAX_LISTENERS` are open at once: one more is refused with
:class:`TooManyListeners` (the API answers 503).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from typing import Generic, TypeVar

import trio

from gossipmind.core.errors import GossipmindError

log = logging.getLogger("gossipmind.node")
MAX_LISTENERS = 1024
T = TypeVar("T")


class TooManyListeners(GossipmindError):
    """Every listener slot is taken (close some subscriptions or event streams)."""


class Listeners(Generic[T]):
    """Send channels of one kind of event, each dropped when its reader is gone
    or falls ``buffer`` events behind (its channel then ends)."""

    def __init__(self, what: str, limit: int = MAX_LISTENERS) -> None:
        self.what = what  # e.g. "op listener", for the log and errors
        self.limit = limit
        self._chans: list[
            tuple[trio.MemorySendChannel[T], weakref.ref[trio.MemoryReceiveChannel[T]]]
        ] = []

    def __len__(self) -> int:
        return len(self._chans)

    def add(self, buffer: int) -> trio.MemoryReceiveChannel[T]:
        """A new channel; raise TooManyListeners if ``limit`` are open."""
        self.prune()
        if len(self._chans) >= self.limit:
            raise TooManyListeners(
                f"{len(self._chans)} {self.what}s are open, the most a node serves; "
                "close one and retry"
            )
        send, recv = trio.open_memory_channel[T](buffer)
        self._chans.append((send, weakref.ref(recv)))
        return recv

    def prune(self) -> None:
        """Drop the channels nobody reads any more: every receiver closed, or the
        one handed out garbage-collected unclosed (which still counts as open)
        with no clone of it open besides."""
        keep = []
        for send, recv in self._chans:
            readers = send.statistics().open_receive_channels
            if readers == 0 or (recv() is None and readers <= 1):
                send.close()
            else:
                keep.append((send, recv))
        self._chans = keep

    def send(self, items: Iterable[T]) -> None:
        """Send each item to every listener, dropping the slow and the gone."""
        batch = list(items)
        if not batch:
            return
        self.prune()
        keep = []
        for send, recv in self._chans:
            try:
                for item in batch:
                    send.send_nowait(item)
            except trio.WouldBlock:
                log.warning("a %s is too slow; dropping it", self.what)
                send.close()
                continue
            except trio.BrokenResourceError:
                send.close()
                continue
            keep.append((send, recv))
        self._chans = keep
