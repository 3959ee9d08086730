"""SIGKILL during batched ingest: the store reopens consistent and loses nothing acked."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from gossipmind.core import encoding
from gossipmind.core.snapshot import snapshot
from gossipmind.store.queries import Reader
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB

WORKER = Path(__file__).with_name("crash_worker.py")


def make_ops(n: int) -> KB:
    kb = KB(seed=11)
    for name in ("a", "b"):
        kb.grant("admin", name, "member")
        kb.sync("admin", name)
    for i in range(n):
        kb.report("ab"[i % 2], service=["search", "llm", "payments"][i % 3], count=1 + i % 3)
    return kb


def run_and_kill(store: Path, ops_file: Path, rng: random.Random) -> int:
    """Start the worker, SIGKILL it at a random point; return the last acked count."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(store), str(ops_file), "40"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(WORKER.parent)},
    )
    acked = 0
    kill_after = rng.randint(0, 30)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        seen = 0
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or line.startswith("DONE"):
                break
            if line.startswith("ACK"):
                acked = int(line.split()[1])
                seen += 1
                if seen >= kill_after:
                    time.sleep(rng.random() * 0.02)  # land somewhere inside the next batch
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stdin:
            proc.stdin.close()
    return acked


def test_sigkill_during_batched_ingest_loses_nothing_acknowledged(tmp_path: Path) -> None:
    kb = make_ops(1500)
    ops_file = tmp_path / "ops.bin"
    ops_file.write_bytes(encoding.encode([op.raw for op in kb.ops]))
    rng = random.Random(7)
    store = tmp_path / "kb.sqlite3"
    trials = 6
    acks = []
    for _ in range(trials):
        acked = run_and_kill(store, ops_file, rng)
        acks.append(acked)
        with Store.open(store) as s:  # reopens (replay re-applies every stored op)
            held = set(s.replica.meta)
            assert all(op.id in held for op in kb.ops[: acked + 1]), "lost an acknowledged op"
            snap = snapshot(s.replica)
        with Reader(store) as r:  # materialised tables agree with the replayed fold
            assert r.status()["root"] == snap["root"]
            assert r.fixes() == snap["fixes"]
            assert {p["pattern"]: p for p in r.patterns(limit=10**6)} == {
                p["pattern"]: p for p in snap["patterns"]
            }
    killed_midway = [a for a in acks if 0 < a < len(kb.ops) - 1]
    assert len(killed_midway) >= 3, acks  # most trials were killed inside the ingest
