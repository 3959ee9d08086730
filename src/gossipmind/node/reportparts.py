"""The reporter's small parts (node/reporter.py): its bounded queue of unwritten
bodies, a report waiting for its journal commit, the body being written, and
what a failure's journal row holds."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from gossipmind.core.errors import GossipmindError
from gossipmind.learn.patterns import Reduced
from gossipmind.store.journal import Row

Body = tuple[str, dict[str, Any]]  # kind, body
FULL = "MAX_UNWRITTEN reports wait to be written already (the oldest is dropped)"


def failure_data(r: Reduced) -> list[Any]:
    """What a failure's journal row holds: the reduced report, never the raw one."""
    head = [r.pattern, r.service, r.operation, r.error_class, r.template]
    return [*head, r.shape, r.status, r.latency_ms, r.retry_after_ms]


class _Owner(Protocol):
    def _dropped(self, kind: str, body: dict[str, Any], why: str) -> None: ...


class BoundedQueue(deque[Body]):
    """A queue of unwritten bodies that drops its oldest when full.

    The body being written is not in it (see ``Reporter.flush``), so it is never
    the one dropped; a dropped body leaves through ``Reporter._dropped``.
    """

    def __init__(self, limit: int, owner: _Owner) -> None:
        super().__init__()
        self._limit, self._owner = limit, owner

    def append(self, item: Body) -> None:
        if self and len(self) >= self._limit:
            self._owner._dropped(*self.popleft(), FULL)
        super().append(item)


@dataclass(eq=False)
class Taking:
    """A report waiting for its journal row's commit; ``count`` counts it then."""

    row: Row
    count: Callable[[bytes | None], object]
    done: trio.Event = field(default_factory=trio.Event)
    error: GossipmindError | None = None
    taken: bool = False  # its row committed, and it was counted


@dataclass(eq=False)
class InFlight:
    """The body ``flush`` is writing, out of the queue until the write ends."""

    body: Body
    durable: bool = False  # its op is committed (the write may not have returned yet)
