"""The SDK clients of a process at its edges: interpreter exit, and ``os.fork``.

At exit, a client never closed still holds reports in its queue, and the thread
that sends them is a daemon thread, killed with the interpreter: they are sent
here first, for at most :data:`EXIT_FLUSH_S` in all. In a forked child no thread
of the parent's runs, so each client resets what those threads kept up to date.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from gossipmind.api.outbox import Outbox, Sender
from gossipmind.core.errors import NetworkError

log = logging.getLogger("gossipmind.sdk")

EXIT_FLUSH_S = 2.0  # s: at interpreter exit, the most spent sending unclosed clients' queues


class Tracked(Protocol):
    def _at_exit(self, deadline: float) -> None: ...

    def _after_fork(self) -> None: ...

    def _post(self, path: str, body: dict[str, Any]) -> bool: ...


_CLIENTS: weakref.WeakSet[Tracked] = weakref.WeakSet()  # every client not closed


def track(client: Tracked) -> None:
    _CLIENTS.add(client)


def untrack(client: Tracked) -> None:
    _CLIENTS.discard(client)


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        client._after_fork()


def _at_exit() -> None:
    """Send the queues of the clients not closed: at most EXIT_FLUSH_S in all (no
    request is started after it; one under way takes at most its client's
    timeout, which is capped to EXIT_FLUSH_S)."""
    deadline = time.monotonic() + EXIT_FLUSH_S
    for client in list(_CLIENTS):
        try:
            client._at_exit(deadline)
        except Exception:
            log.exception("gossipmind: sending the queue at exit failed")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)


def dropped(outbox: Outbox, sender: Sender) -> None:
    """A client garbage-collected unclosed (``stream=False``: the event thread holds
    the others): its thread ends, and what it still queued is lost — say so."""
    sender.close()
    if left := len(outbox.items):
        log.warning(
            "gossipmind: %d queued report(s) lost: a Client was dropped without close()", left
        )


def weak_send(client: Tracked) -> Callable[[str, dict[str, Any]], bool]:
    """``client._post`` for the outbox thread, which must not keep the client alive."""
    post = weakref.WeakMethod(client._post)

    def send(path: str, body: dict[str, Any]) -> bool:
        method = post()
        if method is None:
            raise NetworkError("the client is gone")
        return method(path, body)

    return send
