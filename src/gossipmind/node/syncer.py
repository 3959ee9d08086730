"""Anti-entropy over streams: drive a sans-I/O sync session on a transport stream."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from gossipmind.core.errors import GossipmindError, NetworkError, SyncError
from gossipmind.net.interface import Stream, StreamEOF
from gossipmind.sync import messages
from gossipmind.sync.session import Session

log = logging.getLogger("gossipmind.node.sync")


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


async def drive(
    stream: Stream,
    session: Session,
    ingest: Callable[[list[bytes]], object],
    counters: SyncCounters,
    *,
    timeout: float,
) -> bool:
    """Run ``session`` to its end over ``stream``. True if it completed.

    ``ingest`` applies received ops (durably) before the next frame is read, as
    the session requires. Every receive is bounded by ``timeout``: a peer that
    stalls (slowloris) is dropped.
    """
    counters.sessions += 1

    async def send_all(msgs: object) -> None:
        for msg in msgs:  # type: ignore[attr-defined]
            frame = messages.encode(msg)
            counters.frames_sent += 1
            counters.bytes_sent += len(frame)
            await stream.send(frame)

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
                ingest(step.ops)
                await trio.lowlevel.checkpoint()
            await send_all(step.send)
    except StreamEOF:
        counters.failed += 1
        log.debug("sync with %s: peer closed early", stream.remote_peer)
        return False
    except trio.TooSlowError:
        counters.failed += 1
        log.info("sync with %s: no frame for %.0f s, dropped", stream.remote_peer, timeout)
        await stream.reset()
        return False
    except (NetworkError, SyncError) as exc:
        counters.failed += 1
        log.info("sync with %s failed: %s", stream.remote_peer, exc)
        await stream.reset()
        return False
    except GossipmindError as exc:  # e.g. a store failure while ingesting: stop the session
        counters.failed += 1
        log.warning("sync with %s aborted: %s", stream.remote_peer, exc)
        await stream.reset()
        raise
    finally:
        counters.ops_sent += session.stats.ops_sent
        counters.op_bytes_sent += session.stats.op_bytes_sent
    counters.completed += 1
    await stream.close()
    return True
