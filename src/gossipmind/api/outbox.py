"""The SDK's queue of reports on their way to the node (:class:`Outbox`) and the
thread of its own that sends them (:class:`Sender`): an agent's call never waits
for the node, and a report whose answer did not come is sent again with its id.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from gossipmind.api.records import ClientStats
from gossipmind.api.transport import PATIENCE, MaybeSent, fork_safe
from gossipmind.core.errors import GossipmindError

log = logging.getLogger("gossipmind.sdk")

OUTCOMES = "/v1/outcomes"
MAX_OUTCOME_ATTEMPTS = 1_000_000  # what one POST /v1/outcomes may carry
MAX_SENDS = 20  # sends of one report whose answer does not come (then dropped: unconfirmed)
MAX_RESEND_S = 600.0  # s after its first unanswered send a report may still be sent again
Item = tuple[str, dict[str, Any]]  # path, body


def check_outcome(fid: object, attempts: int, ok: int) -> str:
    """The hex of fix id ``fid`` of an outcome; ValueError for an id that is not 32
    bytes or counts the node would refuse."""
    if not isinstance(fid, bytes | bytearray) or len(fid) != 32:
        raise ValueError(f"a fix id is 32 bytes, not {fid!r}")
    for name, n in (("attempts", attempts), ("successes", ok)):
        if type(n) is not int or not 0 <= n <= MAX_OUTCOME_ATTEMPTS:
            raise ValueError(f"{name} must be an integer 0-{MAX_OUTCOME_ATTEMPTS}, not {n!r}")
    if attempts < 1 or ok > attempts:
        raise ValueError(f"need 1 <= attempts and successes <= attempts, not {attempts}, {ok}")
    return bytes(fid).hex()


def report_id() -> str:
    """A new report's id: 16 random bytes (hex). The node counts a report once per id."""
    return secrets.token_hex(16)


def _rid(item: Item) -> str | None:
    rid = item[1].get("id")
    return rid if isinstance(rid, str) else None


class Outbox:
    """Bounded queue of reports on their way to the node (fail open, send later).

    Outcomes of one fix waiting in the queue add up into one request
    (:meth:`put_outcome`); a request being sent, or sent once already, is never
    changed. A report sent without an answer (:class:`MaybeSent`) stays first in
    the queue and is sent again with the same ``id`` (the node counts it once),
    at most ``max_sends`` times in all and for ``max_resend_s`` after its first
    such send; then it is dropped and counted in ``stats.reports_unconfirmed``.
    """

    def __init__(self, maxlen: int, stats: ClientStats | None = None) -> None:
        self.items: deque[Item] = deque(maxlen=maxlen)
        self.dropped = 0  # the oldest, when the queue was full
        self.poisoned = 0  # could not be sent at all (a bug): dropped, logged
        self.stats = stats if stats is not None else ClientStats()
        self.max_sends, self.max_resend_s = MAX_SENDS, MAX_RESEND_S
        self._unanswered: dict[str, list[float]] = {}  # report id -> [first such send, sends]
        self._outcomes: dict[str, tuple[str, dict[str, Any]]] = {}  # fix -> its queued item
        self._in_flight: tuple[str, dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._draining = threading.Lock()  # one drainer at a time: nothing is sent twice
        fork_safe(self)

    def _after_fork(self) -> None:
        """In a forked child no thread drains: a lock held in the parent at the fork
        would never be released (flush() would hang). The queued requests are the
        parent's to send: the child's copy is dropped, or both would send them."""
        self._lock = threading.Lock()
        self._draining = threading.Lock()
        self.items.clear()
        self._outcomes.clear()
        self._unanswered.clear()
        self._in_flight = None

    def pending(self) -> bool:
        return bool(self.items)

    def put(self, path: str, body: dict[str, Any], *, unanswered: bool = False) -> None:
        """Queue a report (``unanswered``: it was sent once, and no answer came)."""
        with self._lock:
            item = (path, body)
            self._append(item)
            rid = _rid(item)
            if unanswered and rid is not None and self.items and self.items[-1] is item:
                self._unanswered[rid] = [time.monotonic(), 1.0]

    def put_outcome(self, fix: str, attempts: int, successes: int) -> None:
        """Queue an outcome of ``fix`` (hex), adding it to one of the same fix that
        waits in the queue (not being sent) when the sum stays within one request."""
        with self._lock:
            item = self._outcomes.get(fix)
            if item is not None and item is not self._in_flight and not self._tried(item):
                body = item[1]
                if body["attempts"] + attempts <= MAX_OUTCOME_ATTEMPTS:
                    body["attempts"] += attempts
                    body["successes"] += successes
                    return
            body = {"fix": fix, "attempts": attempts, "successes": successes, "id": report_id()}
            item = (OUTCOMES, body)
            self._append(item)
            if self.items and self.items[-1] is item:  # (a queue of 0 keeps nothing)
                self._outcomes[fix] = item

    def _append(self, item: tuple[str, dict[str, Any]]) -> None:
        if len(self.items) == self.items.maxlen:
            self.dropped += 1
            if self.items:
                self._forget(self.items[0])  # the deque drops the oldest
        self.items.append(item)

    def _tried(self, item: Item) -> bool:
        """Whether ``item`` was sent without an answer (the node may have it as it is)."""
        rid = _rid(item)
        return rid is not None and rid in self._unanswered

    def _forget(self, item: Item) -> None:
        """Stop adding outcomes to ``item`` (it leaves the queue)."""
        fix = item[1].get("fix") if item[0] == OUTCOMES else None
        if isinstance(fix, str) and self._outcomes.get(fix) is item:
            del self._outcomes[fix]
        if (rid := _rid(item)) is not None:
            self._unanswered.pop(rid, None)

    def _no_answer(self, item: Item, *, sent: bool) -> None:
        """``item`` got no answer (``sent``: it went out; else the node could not be
        reached). It stays first in the queue to be sent again with the same id,
        within the bounds; past them, or without an id (sent again, it could be
        counted twice), it leaves the queue as unconfirmed."""
        now = time.monotonic()
        with self._lock:
            self._in_flight = None
            rid = _rid(item)
            rec = self._unanswered.get(rid) if rid is not None else None
            if rec is None and sent and rid is not None:
                rec = self._unanswered[rid] = [now, 0.0]
            if rec is None:
                if not sent:
                    return  # never sent: it waits for the node, however long
            else:
                rec[1] += sent
                if rec[1] < self.max_sends and now - rec[0] < self.max_resend_s:
                    return
        self._done(item)
        self.stats.reports_unconfirmed += 1
        log.warning(
            "gossipmind: gave up a %s the node did not answer (%d sends, %.0f s): it may "
            "or may not have it",
            item[0],
            rec[1] if rec else 1,
            now - rec[0] if rec else 0.0,
        )

    def _done(self, item: tuple[str, dict[str, Any]]) -> None:
        with self._lock:
            self._in_flight = None
            if self.items and self.items[0] is item:  # (not dropped meanwhile)
                self.items.popleft()
                self._forget(item)

    def drain(
        self,
        send: Callable[[str, dict[str, Any]], object],
        *,
        wait: bool = False,
        deadline: float | None = None,
        patient: bool = False,
    ) -> int:
        """Send queued items in order until one fails; return how many went.

        One thread drains at a time: while another does, this returns 0 at once
        (``wait=True``: waits for it, then sends what is left). With a ``deadline``
        (monotonic), it waits only until then and starts no send after it. An item
        leaves the queue only once the node answered, so a failed send loses
        nothing; one that may have reached the node (:class:`MaybeSent`) is sent
        again with the same id on a later round, within the class's bounds (see
        :class:`Outbox`) — ``patient`` (the outbox thread, which keeps no agent
        waiting): waiting for its answer twice as long each time, up to
        :data:`MAX_PATIENCE_S`, so that a node slower than the timeout answers it
        at last; one that cannot be sent at all (not a
        :class:`GossipmindError`: say it cannot be encoded) is dropped, counted in
        ``poisoned`` and logged, so it never blocks the queue.
        """
        limit = -1.0 if deadline is None or not wait else max(0.0, deadline - time.monotonic())
        if not self._draining.acquire(wait, limit):
            return 0
        try:
            sent = 0
            while True:
                with self._lock:
                    if not self.items or (deadline is not None and time.monotonic() >= deadline):
                        return sent
                    item = self.items[0]
                    self._in_flight = item
                    sends = self._unanswered.get(_rid(item) or "", [0.0, 0.0])[1]
                    self.stats.reports_resent += sends > 0
                token = PATIENCE.set(2.0**sends if patient else 1.0)
                try:
                    send(*item)
                except MaybeSent:  # the node may have it: again later (same id), or given up
                    self._no_answer(item, sent=True)
                    return sent
                except GossipmindError:  # unreachable or misconfigured: keep it for later
                    self._no_answer(item, sent=False)
                    return sent
                except Exception as exc:  # noqa: BLE001 - one bad item never blocks the queue
                    self._done(item)
                    self.poisoned += 1
                    log.warning("gossipmind: dropped a queued %s that cannot be sent: %r",
                                item[0], exc)  # fmt: skip
                    continue
                finally:
                    PATIENCE.reset(token)
                self._done(item)
                sent += 1
        finally:
            self._draining.release()


class Sender:
    """One daemon thread of the SDK's own (``gossipmind-sdk-outbox``) that sends what
    the :class:`Outbox` holds, so an agent's call never waits for the node.

    Started on the first :meth:`wake`, again in a forked child. While the node
    does not take the queue, it retries after 0.2 s, doubling up to 5 s (a
    ``wake(now=True)``, say the node's event stream is back, retries at once).
    A thread that cannot be started leaves the queue to ``flush()``/``close()``.
    """

    def __init__(
        self,
        outbox: Outbox,
        send: Callable[[str, dict[str, Any]], object],
        name: str = "gossipmind-sdk-outbox",
    ) -> None:
        self.outbox = outbox
        self.send = send
        self.name = name
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._backing_off = False
        self._closed = False
        fork_safe(self)

    def _after_fork(self) -> None:
        """The child has none of the parent's threads: its first wake starts one."""
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread = None
        self._backing_off = False

    def wake(self, *, now: bool = False) -> None:
        """Have the thread send the queue: at once if it is idle (or ``now``),
        else when its back-off ends. Never raises."""
        if self._closed:
            return
        if (now or not self._backing_off) and not self._wake.is_set():
            self._wake.set()
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread": flush() sends them
                log.debug("gossipmind: no outbox thread: %r", exc)
                return
            self._thread = thread

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread once it has sent what it was sending (waits ``timeout``)."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and timeout is not None:
            thread.join(timeout)

    def _run(self) -> None:
        delays = backoff_delays()
        wait: float | None = None
        try:
            while True:
                self._wake.wait(wait)
                self._wake.clear()
                if self._closed:
                    return
                if self.outbox.drain(self.send, patient=True):  # it answers: from 0.2 s again
                    delays = backoff_delays()
                if self.outbox.pending():  # down, slow, or another thread is sending
                    self._backing_off = True
                    wait = next(delays)
                else:
                    self._backing_off = False
                    delays, wait = backoff_delays(), None
        except Exception:  # a bug: say so; the next wake starts a new thread
            log.exception("gossipmind: the outbox thread failed")
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None


def backoff_delays(first: float = 0.2, cap: float = 5.0) -> Iterator[float]:
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)
