#!/usr/bin/env python3
"""Coverage-guided fuzzing of the sync frame decoder and session (atheris).

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/atheris_sync.py -max_total_time=60 [CORPUS_DIR ...]

Properties, for every input: ``sync.messages.decode`` raises only ``SyncError``
and what it accepts has a stable encoding; a responder session that receives the
input as its first frame, then an ``end``, raises only ``SyncError``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["gossipmind"]):
    from gossipmind.core.errors import SyncError
    from gossipmind.sync import messages as sm
    from gossipmind.sync.session import Session
    from gossipmind.testing import KB
    from gossipmind.testing.memory import MemoryKB


def source() -> tuple[MemoryKB, list[bytes]]:
    kb = KB(seed=5)
    kb.grant("admin", "a", "member")
    kb.sync("admin", "a")
    for i in range(3):
        kb.report("a", count=1 + i)
    mem = MemoryKB(kb.genesis)
    mem.ingest_raw(op.raw for op in kb.ops[1:])
    net, ids = kb.genesis.id, [op.id for op in kb.ops]
    frames = [
        sm.Hello(net, {}, [], bytes(32), 0),
        sm.Hello(net, {kb.key("a"): 1}, ids[-1:], bytes(32), 2, ["/ip4/127.0.0.1/tcp/1"]),
        sm.Ops([op.raw for op in kb.ops[:3]]),
        sm.Sent(),
        sm.End(ids[:2]),
        sm.Bye("done"),
    ]
    return mem, [sm.encode(f) for f in frames]


MEM, FRAMES = source()
END = sm.encode(sm.End([]))


def test_one_input(data: bytes) -> None:
    try:
        msg = sm.decode(data)
    except SyncError:
        return
    once = sm.encode(msg)
    if sm.encode(sm.decode(once)) != once:
        raise AssertionError("the encoding of an accepted frame is not stable")
    session = Session(MEM, initiator=False)
    try:
        for frame in (data, END):
            step = session.receive(sm.decode(frame))
            for _ in zip(range(10_000), step.send, strict=False):
                pass
            if step.done:
                break
    except SyncError:
        pass


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="gm-sync-corpus-"))
        for i, frame in enumerate(FRAMES):
            (corpus / f"seed-{i}").write_bytes(frame)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
