"""Anti-entropy over streams: drive a sans-I/O sync session on a transport stream."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from gossipmind.core.errors import GossipmindError, NetworkError, SyncError
from gossipmind.core.replica import IngestResult
from gossipmind.net.interface import FrameTooLarge, Stream, StreamEOF, TruncatedFrame
from gossipmind.sync import messages
from gossipmind.sync.session import Session

log = logging.getLogger("gossipmind.node.sync")


# Why a session failed -> whether the peer is made to wait before its next one.
# Stalling, overrunning and breaking the protocol are what a hostile peer does to
# hold a node's one session slot; a closed stream or a broken link is ordinary.
# Rejection codes of ops that no honest replica ever holds or serves.
FORGED = frozenset({"encoding", "signature", "wrong_network", "oversized"})
PENALIZED = frozenset({"timeout", "deadline", "held", "protocol", "frame_too_large", "truncated"})
SESSION_LIMIT = 4  # a whole session may last this many sync timeouts
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
    # side is on another network): neither completed nor failed
    declined_by_reason: dict[str, int] = field(default_factory=dict)
    failed_by_reason: dict[str, int] = field(default_factory=dict)


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
    """

    def __init__(self, base: float, cap: float, max_peers: int = 4096) -> None:
        self._base, self._cap, self._max = base, cap, max_peers
        # peer -> (wait until, strikes, time of the last offence)
        self._records: dict[str, tuple[float, int, float]] = {}

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

    def record(self, peer: str, reason: str, now: float) -> float:
        """Note how a session with ``peer`` ended (``""``: completed); the wait imposed."""
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
) -> str:
    """Run ``session`` to its end over ``stream``; ``""`` if it completed, else why not.

    A session ended before both sides said hello (the peer refused: ``busy``,
    ``later``; or the networks differ) did not complete: it returns
    ``"declined"`` and is counted in ``counters.declined_by_reason``, not as a
    failure.

    ``ingest`` applies received ops (durably) before the next frame is read, as
    the session requires. Every receive is bounded by ``timeout`` (a peer that
    stalls is dropped) and the whole session by ``limit`` (a peer that keeps a
    session alive with a frame now and then is dropped too: ops already applied
    stay, the next session goes on from there). Failure reasons, counted in
    ``counters.failed_by_reason``: ``eof`` (the peer closed early or the link
    dropped), ``held`` (the same after a timeout or more: penalized),
    ``timeout``, ``deadline``, ``frame_too_large``, ``truncated``, ``protocol``
    (a malformed or unexpected message), ``network``.
    """
    counters.sessions += 1

    async def send_all(msgs: object) -> None:
        for msg in msgs:  # type: ignore[attr-defined]
            frame = messages.encode(msg)
            counters.frames_sent += 1
            counters.bytes_sent += len(frame)
            await stream.send(frame)

    reason = ""
    detail: object = None
    started = trio.current_time()
    with trio.move_on_after(limit) as overall:
        try:
            await send_all(session.start())
            while not session.done:
                with trio.fail_after(timeout):
                    frame = await stream.receive()
                counters.frames_received += 1
                counters.bytes_received += len(frame)
                step = session.receive(messages.decode(frame))
                if step.ops:
                    counters.ops_received += len(step.ops)
                    _no_forgeries(ingest(step.ops))
                    await trio.lowlevel.checkpoint()
                await send_all(step.send)
        except StreamEOF:
            # A link that drops is ordinary; a peer that held the node's one
            # session slot for a timeout or more and then hung up, before its
            # penalty could come, is holding it on purpose: "held" is penalized.
            reason = "held" if trio.current_time() - started >= timeout else "eof"
        except trio.TooSlowError:
            reason, detail = "timeout", f"no frame for {timeout:.0f} s"
        except FrameTooLarge as exc:
            reason, detail = "frame_too_large", exc
        except TruncatedFrame as exc:
            reason, detail = "truncated", exc
        except SyncError as exc:
            reason, detail = "protocol", exc
        except NetworkError as exc:
            reason, detail = "network", exc
        except GossipmindError as exc:  # e.g. a store failure while ingesting: stop the session
            _failed(counters, "store")
            log.warning("sync with %s aborted: %s", stream.remote_peer, exc)
            await stream.reset()
            raise
        finally:
            counters.ops_sent += session.stats.ops_sent
            counters.op_bytes_sent += session.stats.op_bytes_sent
    if overall.cancelled_caught:
        reason, detail = "deadline", f"the session lasted over {limit:.0f} s"
    if reason:
        _failed(counters, reason)
        if reason == "eof":
            log.debug("sync with %s: peer closed early", stream.remote_peer)
        else:
            log.info("sync with %s failed (%s): %s", stream.remote_peer, reason, detail)
            await _end(stream, reset=True)
        return reason
    await _end(stream, reset=False)
    if not session.completed:
        why = session.declined or "bye"
        counters.declined_by_reason[why] = counters.declined_by_reason.get(why, 0) + 1
        log.debug("sync with %s declined: %s", stream.remote_peer, why)
        return "declined"
    counters.completed += 1
    return ""


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
