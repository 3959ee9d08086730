"""Run a sync session between two in-process sources, through the wire encoding."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gossipmind.sync import messages
from gossipmind.sync.session import Session
from gossipmind.sync.source import OpSource

Ingest = Callable[[list[bytes]], object]


@dataclass
class Transcript:
    frames: int = 0
    bytes: int = 0
    op_bytes: int = 0
    ops: int = 0


def converse(
    a: OpSource,
    b: OpSource,
    ingest_a: Ingest,
    ingest_b: Ingest,
    *,
    max_frames: int = 100_000,
    tamper: Callable[[bytes], bytes] | None = None,
) -> Transcript:
    """``a`` initiates; frames alternate through encode/decode until both are done."""
    sa = Session(a, initiator=True, nonce=os.urandom(16))
    sb = Session(b, initiator=False, nonce=os.urandom(16))
    to_b: deque[bytes] = deque(messages.encode(m) for m in sa.start())
    to_a: deque[bytes] = deque()
    t = Transcript()

    def pump(frames: deque[bytes], session: Session, ingest: Ingest, out: deque[bytes]) -> None:
        while frames and not session.done:
            raw = frames.popleft()
            if tamper is not None:
                raw = tamper(raw)
            t.frames += 1
            t.bytes += len(raw)
            msg = messages.decode(raw)
            step = session.receive(msg)
            if step.ops:
                t.ops += len(step.ops)
                t.op_bytes += sum(len(o) for o in step.ops)
                ingest(step.ops)
            out.extend(messages.encode(m) for m in step.send)

    for _ in range(max_frames):
        if (sa.done and sb.done) or (not to_a and not to_b):
            break
        pump(to_b, sb, ingest_b, to_a)
        pump(to_a, sa, ingest_a, to_b)
    return t


def ingest_into(kb: object) -> Ingest:
    def ingest(raws: list[bytes]) -> object:
        return kb.ingest_raw(raws)  # type: ignore[attr-defined]

    return ingest


def all_raws(ops: Iterable[object]) -> list[bytes]:
    return [op.raw for op in ops]  # type: ignore[attr-defined]
