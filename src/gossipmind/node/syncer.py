"""Anti-entropy over streams: drive a sans-I/O sync session on a transport stream."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from gossipmind.core.errors import GossipmindError, NetworkError, SyncError
from gossipmind.core.replica import IngestResult
from gossipmind.net.interface import FrameTooLarge, Stream, StreamEOF, TruncatedFrame
from gossipmind.sync import messages
from gossipmind.sync.session import Session

log = logging.getLogger("gossipmind.node.sync")


# Rejection codes of ops that no honest replica ever holds or serves: every code
# ops.decode raises (the op does not decode: docs/protocol.md §6.1 check 1), a
# bad signature and another network. Only "encoding" and "oversized" were here:
# frames of canonical msgpack that is not an op (code "envelope", "version" or
# "unknown_kind") went on unpenalized, ~5 000 rejected rows per 1 MiB frame.
FORGED = frozenset(
    {
        "encoding",
        "oversized",
        "envelope",
        "version",
        "unknown_kind",
        "signature",
        "wrong_network",
        "no_deps",  # no replica holds a second root of the DAG...
        "genesis",  # ...nor a second genesis
    }
)
# Why a session failed -> whether the peer is made to wait before its next one.
# Stalling, overrunning and breaking the protocol are what a hostile peer does to
# hold a node's one session slot; a closed stream or a broken link is ordinary,
# and so is a frame cut short by it ("truncated": py-libp2p reports a lost
# connection as a clean end of stream, which mid-catch-up lands inside a frame).
# Those are judged by their idle time instead (SyncGuard).
PENALIZED = frozenset({"timeout", "deadline", "held", "protocol", "frame_too_large"})
# What a declined session is counted under (counters.declined_by_reason): the
# reasons our nodes refuse with before hello ("bye": an empty reason); any other
# reason a peer sends counts as "other". The keys are a fixed set: counted by the
# peer's words, a peer sending a new reason each time grew the counters (and the
# status) without bound: 200 sessions with 256 KiB reasons held 50 MiB.
DECLINED_REASONS = frozenset({"busy", "later", "wrong network", "bye"})
SESSION_LIMIT = 4  # a whole session may last this many sync timeouts
# A session that reaches its deadline while the peer brought ops new to us at this
# rate or more (bytes of the ops of its frames that were applied, per second over
# the session) is our long catch-up over a slow link, "overran": ended, not
# penalized. Only what we receive counts: the ops we send, a peer reading them
# slowly decides (it would hold the slot with an empty store), and it cannot
# bring us new valid ops it does not have. A peer trickling frames to hold the
# slot brings next to nothing ("deadline").
MIN_PROGRESS_RATE = 32 * 1024
PENALTY_CAP = 16  # the longest wait, in sync timeouts
_MAX_STRIKES = 16
CLOSE_TIMEOUT = 5.0


@dataclass
class SyncCounters:
    sessions: int = 0
    completed: int = 0
    failed: int = 0
    ops_received: int = 0
    ops_sent: int = 0
    op_bytes_sent: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    refused: int = 0  # inbound sessions refused while another one ran
    refused_penalized: int = 0  # inbound sessions refused: the peer must wait (SyncGuard)
    # sessions that ended before both hellos (the peer said busy or later, or a
    # side is on another network): neither completed nor failed; by reason, one
    # of DECLINED_REASONS or "other"
    declined_by_reason: dict[str, int] = field(default_factory=dict)
    failed_by_reason: dict[str, int] = field(default_factory=dict)


class Outcome(str):
    """How a session ended (``""``: completed; else as returned by :func:`drive`),
    with ``idle``: the seconds it spent waiting on the peer while the peer made no
    progress. A str, so callers compare and count it as the bare reason."""

    idle: float

    def __new__(cls, reason: str = "", idle: float = 0.0) -> Outcome:
        self = super().__new__(cls, reason)
        self.idle = idle
        return self


class SyncGuard:
    """Makes peers whose sessions stalled, overran or broke the protocol wait.

    A node runs one sync session at a time (docs/sync.md §3), so a peer that opens
    a session and stalls holds the node's anti-entropy for a whole timeout, and
    one that trickles frames holds it until the session deadline. After such a
    session the peer waits ``base`` seconds before the node runs another session
    with it (either way), doubling with each offence on record up to ``cap``.

    Offences are forgiven by time, not by good sessions: one strike for each
    ``cap`` seconds since the peer's last offence. (Were a completed session to
    clear the record, a peer could stall, wait, complete one honest session and
    stall again, and never wait more than ``base``.) Bounded: at most
    ``max_peers`` records, expired ones dropped first.

    Sessions that end with a lost link (``eof``, ``network``, or ``truncated``:
    it dropped inside a frame) are judged by their idle time (:class:`Outcome`),
    not by how long they lasted: links drop, and a session that kept making
    progress is never penalized for it. But a peer that
    opens a session, sends nothing useful for just under a timeout and hangs up,
    again and again, holds the slot nearly all the time (and so does one that
    ends each with a ``bye`` instead: completed, or declined). So the idle time
    of every session that is not penalized anyway adds up per peer, leaking
    ``base`` seconds each ``cap`` seconds (a leaky bucket: one timeout of idle
    slot time in any 16 timeouts); when it reaches ``base`` it is a ``held``
    offence, as if it were one session. At most
    ``max_peers`` peers' idle time is kept, the emptiest dropped first.
    """

    def __init__(self, base: float, cap: float, max_peers: int = 4096) -> None:
        self._base, self._cap, self._max = base, cap, max_peers
        self._leak = base / cap if cap > 0 else 0.0
        # peer -> (wait until, strikes, time of the last offence)
        self._records: dict[str, tuple[float, int, float]] = {}
        # peer -> (idle seconds on record, as of when)
        self._idle: dict[str, tuple[float, float]] = {}

    def allowed(self, peer: str, now: float) -> bool:
        record = self._records.get(peer)
        return record is None or now >= record[0]

    def strikes(self, peer: str, now: float) -> int:
        """The offences on record for ``peer`` at ``now``, less those forgiven."""
        record = self._records.get(peer)
        if record is None:
            return 0
        forgiven = int(max(0.0, now - record[2]) // self._cap) if self._cap > 0 else record[1]
        return max(0, record[1] - forgiven)

    def idle(self, peer: str, now: float) -> float:
        """The idle slot time on record for ``peer`` at ``now``, less what leaked."""
        level, at = self._idle.get(peer, (0.0, now))
        return max(0.0, level - max(0.0, now - at) * self._leak)

    def _held(self, peer: str, idle: float, now: float) -> bool:
        """Add a dropped session's idle time; True if it adds up to an offence."""
        level = self.idle(peer, now) + idle
        held = level >= self._base
        if held:
            level -= self._base
        self._idle[peer] = (level, now)
        if len(self._idle) > self._max:
            levels = {p: self.idle(p, now) for p in self._idle}
            for p in sorted(levels, key=levels.__getitem__)[: len(levels) - self._max]:
                del self._idle[p]
        return held

    def record(self, peer: str, reason: str, now: float) -> float:
        """Note how a session with ``peer`` ended (``""``: completed); the wait imposed."""
        idle = reason.idle if isinstance(reason, Outcome) else 0.0
        # every session that is not penalized anyway adds its idle time: a peer
        # can end one with a bye (completed, or declined) as well as hang up
        if reason not in PENALIZED and idle > 0 and self._held(peer, idle, now):
            log.info("sync peer %s left the session slot idle for a timeout: held", peer)
            reason = "held"
        strikes = self.strikes(peer, now)
        if reason not in PENALIZED:  # completed, declined or an ordinary failure
            if peer in self._records and strikes == 0 and self.allowed(peer, now):
                del self._records[peer]  # all forgiven: forget the peer
            return 0.0
        wait = min(self._cap, self._base * (1 << min(strikes, _MAX_STRIKES)))
        self._records[peer] = (now + wait, strikes + 1, now)
        if len(self._records) > self._max:
            live = {p: r for p, r in self._records.items() if r[0] > now}
            while len(live) > self._max:
                del live[min(live, key=lambda p: live[p][0])]
            self._records = live
        return wait


async def drive(
    stream: Stream,
    session: Session,
    ingest: Callable[[list[bytes]], object],
    counters: SyncCounters,
    *,
    timeout: float,
    limit: float = math.inf,
) -> Outcome:
    """Run ``session`` to its end over ``stream``; ``""`` if it completed, else why not.

    A session ended before both sides said hello (the peer refused: ``busy``,
    ``later``; or the networks differ) did not complete: it returns
    ``"declined"`` and is counted in ``counters.declined_by_reason`` (under the
    reason if it is one of :data:`DECLINED_REASONS`, else ``"other"``), not as a
    failure.

    ``ingest`` (a function, or an async one) applies received ops (durably) before
    the next frame is read, as the session requires. Every receive is bounded by
    ``timeout`` (a peer that stalls is dropped) and the whole session by ``limit``
    (a peer that keeps a session alive with a frame now and then is dropped too: ops
    already applied stay, the next session goes on from there). Failure reasons,
    counted in ``counters.failed_by_reason``: ``eof`` (the peer closed early or the
    link dropped), ``held`` (the same, ``truncated`` or ``network``, after the
    session was idle for a timeout or more: penalized), ``timeout``, ``deadline``,
    ``overran`` (the deadline, reached while the peer brought ops new to us at
    :data:`MIN_PROGRESS_RATE` or more: our slow catch-up, not penalized),
    ``frame_too_large``, ``truncated`` (the stream ended inside a frame: a link that
    dropped mid-frame), ``protocol`` (a malformed or unexpected message),
    ``network``.

    The session is *idle* while it waits on the peer and the peer makes no
    progress: every receive that brought no op new to us (a hello, ``sent``,
    ``end``, ``bye``, an empty frame, ops we hold), every send of a frame
    without ops (those block only if the peer does not read), and the wait the
    link was lost in. Receiving new ops and sending ops is progress; our own work
    (ingest, reading the store) counts neither way. The result carries it
    (:class:`Outcome`) for :class:`SyncGuard`.
    """
    counters.sessions += 1
    idle = 0.0
    received = 0  # bytes of ops new to us, received
    since: float | None = None  # when the send or receive in progress began

    def waited(progress: bool) -> None:
        nonlocal idle, since
        if since is not None and not progress:
            idle += trio.current_time() - since
        since = None

    async def send_all(msgs: object) -> None:
        nonlocal since, idle
        for msg in msgs:  # type: ignore[attr-defined]
            frame = messages.encode(msg)
            counters.frames_sent += 1
            counters.bytes_sent += len(frame)
            since = trio.current_time()
            await stream.send(frame)
            if isinstance(msg, messages.Ops) and msg.ops:
                # sending ops is progress at the pace of a link that carries
                # MIN_PROGRESS_RATE; a peer reading slower than that chooses to hold
                # the slot (it needs no ops of its own), and the rest is idle
                took = trio.current_time() - since
                idle += max(0.0, took - len(frame) / MIN_PROGRESS_RATE)
                since = None
            else:
                waited(False)

    reason = ""
    detail: object = None
    with trio.move_on_after(limit) as overall:
        try:
            await send_all(session.start())
            while not session.done:
                since = trio.current_time()
                with trio.fail_after(timeout):
                    frame = await stream.receive()
                wait, since = trio.current_time() - since, None
                counters.frames_received += 1
                counters.bytes_received += len(frame)
                step = session.receive(messages.decode(frame))
                if step.ops:
                    counters.ops_received += len(step.ops)
                    result = ingest(step.ops)
                    if inspect.isawaitable(result):
                        # a frame in steps (Node.ingest_frame): applied whole, as a
                        # plain ingest is, so the deadline (or a stop) never lands
                        # between its steps and leaves applied ops uncounted
                        with trio.CancelScope(shield=True):
                            result = await result
                    _no_forgeries(result)
                    received += _new_bytes(result, step.ops)
                    wait = 0.0 if _new_ops(result) else wait
                    await trio.lowlevel.checkpoint()
                idle += wait
                await send_all(step.send)
        except StreamEOF:
            # A link that drops is ordinary; a peer that held the node's one
            # session slot idle for a timeout or more and then hung up, before
            # its penalty could come, is holding it on purpose: "held".
            waited(False)
            reason = "held" if idle >= timeout else "eof"
        except trio.TooSlowError:
            reason, detail = "timeout", f"no frame for {timeout:.0f} s"
        except FrameTooLarge as exc:
            reason, detail = "frame_too_large", exc
        except TruncatedFrame as exc:
            # the link dropped inside a frame: ordinary, unless the session was
            # idle for a timeout or more first (as for eof and network)
            waited(False)
            reason, detail = ("held" if idle >= timeout else "truncated"), exc
        except SyncError as exc:
            reason, detail = "protocol", exc
        except NetworkError as exc:  # a reset, or a link broken
            waited(False)
            reason, detail = ("held" if idle >= timeout else "network"), exc
        except GossipmindError as exc:  # e.g. a store failure while ingesting: stop the session
            _failed(counters, "store")
            log.warning("sync with %s aborted: %s", stream.remote_peer, exc)
            await stream.reset()
            raise
        finally:
            counters.ops_sent += session.stats.ops_sent
            counters.op_bytes_sent += session.stats.op_bytes_sent
    if overall.cancelled_caught:
        rate = received / limit  # (at the deadline: the session lasted ``limit``)
        if rate >= MIN_PROGRESS_RATE:  # a slow link, not a peer holding the slot
            reason = "overran"
            detail = f"lasted over {limit:.0f} s, bringing {rate / 1024:.0f} KiB/s of new ops"
        else:
            reason, detail = "deadline", f"the session lasted over {limit:.0f} s"
    if reason:
        _failed(counters, reason)
        if reason == "eof":
            log.debug("sync with %s: peer closed early", stream.remote_peer)
        else:
            log.info("sync with %s failed (%s): %s", stream.remote_peer, reason, detail)
            await _end(stream, reset=True)
        return Outcome(reason, idle)
    await _end(stream, reset=False)
    if not session.completed:
        why = session.declined or "bye"
        key = why if why in DECLINED_REASONS else "other"
        counters.declined_by_reason[key] = counters.declined_by_reason.get(key, 0) + 1
        log.debug("sync with %s declined: %r", stream.remote_peer, why[: messages.MAX_REASON_LEN])
        return Outcome("declined", idle)
    counters.completed += 1
    return Outcome("", idle)


def _new_ops(result: object) -> bool:
    """Whether ingesting a frame applied an op (any op, if ``ingest`` does not say)."""
    return bool(result.applied) if isinstance(result, IngestResult) else True


def _new_bytes(result: object, raws: Sequence[bytes]) -> int:
    """Bytes of the ops of a frame that ingesting it applied (all, if ``ingest`` does
    not say): not ops it released from the pending buffer, which came earlier."""
    if isinstance(result, IngestResult):
        frame = set(raws)  # (no second hash of each op for its id: ingest made them)
        return sum(len(op.raw) for op in result.applied if op.raw in frame)
    return sum(len(r) for r in raws)


def _no_forgeries(result: object) -> None:
    """End the session (a protocol failure: penalized) if the peer sent an op no
    honest replica could hold: one that does not decode, is badly signed, is of
    another network or oversized. Honest peers serve only ops they applied. Ops
    invalid by the fold's rules (e.g. of a revoked member) are not forgeries:
    replicas may differ on them for a while, and they are only rejected."""
    if isinstance(result, IngestResult):
        forged = [code for _, code, _ in result.rejected if code in FORGED]
        if forged:
            raise SyncError(f"the peer sent {len(forged)} op(s) no replica holds ({forged[0]})")


async def _end(stream: Stream, *, reset: bool) -> None:
    """Close or reset the stream, bounded: the caller holds the node's session slot,
    and a py-libp2p stream close can wait on its connection's locks indefinitely."""
    with trio.move_on_after(CLOSE_TIMEOUT) as scope:
        await (stream.reset() if reset else stream.close())
    if scope.cancelled_caught:
        log.warning(
            "ending a sync stream with %s took over %.0f s", stream.remote_peer, CLOSE_TIMEOUT
        )


def _failed(counters: SyncCounters, reason: str) -> None:
    counters.failed += 1
    counters.failed_by_reason[reason] = counters.failed_by_reason.get(reason, 0) + 1
