"""SIGKILL during ingest, at random points: the store reopens, `doctor` finds it healthy,
every acknowledged op is present and every batch is all-or-nothing.

Each trial runs ``crash_worker.py`` (large batches, one transaction each; plain or
pipelined ingest; ops mostly in causal order with local swaps, so the pending
table is written and emptied too) and kills it with SIGKILL at one of:

* ``statement``: right after the worker announced the k-th SQL statement of its
  j-th transaction (inside the transaction: the batch must vanish whole);
* ``commit``: right after it announced a ``COMMIT`` (during or just after it);
* ``ack``: a random fraction of a millisecond after the j-th acknowledgement
  (verification, apply or the next transaction);
* ``delay``: a random delay after start-up (anywhere).

Trials continue on the same store (recovery after recovery) until it holds every
op, then start a fresh one. ``GOSSIPMIND_CRASH_TRIALS`` scales the trial count
(default 30, ~20 s); the seed is ``GOSSIPMIND_CRASH_SEED`` (default 7).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from gossipmind.core import encoding
from gossipmind.core import ops as opsmod
from gossipmind.core.replica import Replica
from gossipmind.core.schema import pattern_id
from gossipmind.store.datadir import DataDir
from gossipmind.store.doctor import diagnose
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, sample_recipe

WORKER = Path(__file__).with_name("crash_worker.py")
TRIALS = int(os.environ.get("GOSSIPMIND_CRASH_TRIALS", "30"))
SEED = int(os.environ.get("GOSSIPMIND_CRASH_SEED", "7"))
BATCH = 300
SERVICES = ("search", "llm", "payments")


def make_ops(n: int) -> KB:
    """Two members and a verifier writing concurrently: reports, proposals,
    attestations, outcomes; a revoke two thirds in (a full recomputation)."""
    kb = KB(seed=11)
    for name in ("a", "b"):
        kb.grant("admin", name, "member")
    kb.grant("admin", "v", "verifier", tier=1, scopes=("*",))
    for name in ("a", "b", "v"):
        kb.sync("admin", name)
    fixes: list[tuple[bytes, str]] = []
    for i in range(n):
        who, svc = "ab"[i % 2], SERVICES[i % 3]
        roll = i % 10
        if roll < 7:
            kb.report(who, service=svc, count=1 + i % 3)
        elif roll == 7:
            pattern = pattern_id(svc, "query", "timeout", "request timed out after <*> ms")
            fixes.append((kb.propose(who, pattern, sample_recipe(svc, 2 + i % 3, True)), svc))
        elif roll == 8 and fixes:
            kb.sync(who, "v")
            fix, scope = fixes[-1]
            kb.write("v", "fix.attest", kb.attest_body(fix, scope))
        elif fixes:
            fix = fixes[i % len(fixes)][0]
            body = {"fix": fix, "attempts": 3, "successes": i % 4, "window": [0, 1]}
            kb.write(who, "fix.outcome", body)
        if i % 40 == 39:
            kb.sync("a", "b")
            kb.sync("b", "a")
        if i == 2 * n // 3:
            kb.sync("b", "admin")
            kb.revoke("admin", "b")
    return kb


def arrival_order(kb: KB, rng: random.Random) -> list[bytes]:
    """Creation order with shuffles inside windows of 12: some ops arrive before their deps."""
    ops = [op.raw for op in kb.ops[1:]]
    for start in range(0, len(ops), 12):
        window = ops[start : start + 12]
        rng.shuffle(window)
        ops[start : start + 12] = window
    return [kb.genesis.raw, *ops]


@dataclass
class Trial:
    start: int  # index of the first op the worker had to ingest
    acked: int  # ops [1, acked) were acknowledged
    where: str  # the kill point
    mode: str  # ingest | stream


def run_and_kill(store: Path, ops_file: Path, len_raws: int, rng: random.Random) -> Trial:
    """Start the worker, SIGKILL it at a random point of one of four kinds."""
    mode = rng.choice(["ingest", "stream"])
    kind = rng.choice(["statement", "statement", "commit", "ack", "delay"])
    statement = rng.randint(1, 320)  # a batch of 300 ops is ~310-320 statements
    nth = 1  # which transaction / acknowledgement: chosen once the worker says where it starts
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(store), str(ops_file), str(BATCH), mode, "trace"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    start = acked = -1
    where = "done"
    begins = commits = acks = in_txn = 0
    try:
        assert proc.stdout is not None
        for _ in range(10**6):  # bounded; each line is one worker event
            line = proc.stdout.readline()
            if not line or line.startswith("DONE"):
                break
            word = line.split()
            if word[0] == "READY":
                start = acked = int(word[1])
                nth = rng.randint(1, max(1, -(-(len_raws - start) // BATCH)))
                if kind == "delay":
                    _sleep(rng.random() * 0.3)
                    where = "delay"
                    break
            elif word[0] == "ACK":
                acked = int(word[1])
                acks += 1
                if kind == "ack" and acks == nth:
                    _sleep(rng.random() * 0.001)
                    where = "ack"
                    break
            elif word[0] == "T" and word[1].startswith("BEGIN"):
                begins += 1
                in_txn = 0
            elif word[0] == "T" and word[1] == "COMMIT":
                commits += 1
                if kind in ("commit", "statement") and commits == nth:
                    where = "commit"
                    break
            elif word[0] == "T":
                in_txn += 1
                if kind == "statement" and begins == nth and in_txn == statement:
                    where = "statement"
                    break
            else:
                raise AssertionError(f"worker said {line!r}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for pipe in (proc.stdout, proc.stdin):
            if pipe:
                pipe.close()
    assert start >= 1, "the worker did not start"
    return Trial(start, acked, where, mode)


def _sleep(seconds: float) -> None:
    """A random pause before the kill (this is where the kill lands, not a timing check)."""
    time.sleep(seconds)


def reference(raws: list[bytes], end: int) -> Replica:
    """What ingesting ops [1, end) must give, computed without the store."""
    r = Replica(opsmod.decode(raws[0]))
    for raw in raws[1:end]:
        r.ingest(opsmod.decode(raw), verified=True)
    return r


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


@pytest.mark.timeout(max(300, TRIALS * 6))  # a bound that scales with the trial count
def test_sigkill_during_ingest_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    kb = make_ops(1500)
    raws = arrival_order(kb, rng)
    ops_file = tmp_path / "ops.bin"
    ops_file.write_bytes(encoding.encode(raws))
    d = DataDir(tmp_path / "dd")
    d.ensure()
    wal = d.store.with_name(d.store.name + "-wal")
    ends = set(range(1 + BATCH, len(raws), BATCH)) | {len(raws)}
    kills: Counter[str] = Counter()
    rolled_back = committed_unacked = stores = ingested = 0
    for _ in range(TRIALS):
        if not d.store.exists():
            stores += 1
        t = run_and_kill(d.store, ops_file, len(raws), rng)
        kills[t.where] += 1
        # doctor on the crashed files (a hot WAL, no writer): healthy, and read-only
        before = (digest(d.store), digest(wal))
        crashed = diagnose(d)
        assert crashed.healthy, (t, crashed.findings)
        assert (digest(d.store), digest(wal)) == before, "doctor wrote to the store"
        with Store.open(d.store) as s:  # replays every stored op
            known = s.replica.known
            held = next((i for i in range(1, len(raws)) if not known(opsmod.op_id(raws[i]))), None)
            held = len(raws) if held is None else held
            assert not any(known(opsmod.op_id(r)) for r in raws[held:]), "not a prefix"
            assert held >= t.acked, f"lost acknowledged ops: held {held}, acked {t.acked} ({t})"
            assert held == t.start or held in ends, f"a batch was partly stored ({held}, {t})"
            want = reference(raws, held)
            assert s.replica.root() == want.root()
            assert set(s.replica.pending.ops) == set(want.pending.ops)
            rolled_back += t.where in ("statement", "commit") and held == t.acked
            committed_unacked += held > t.acked
            complete = held == len(raws)
            ingested += held - t.start
        assert crashed.stats["ops"] == len(want.meta)  # doctor saw what the store reopened
        after = diagnose(d)
        assert after.healthy, (t, after.findings)
        if complete:  # start over on a fresh store
            for p in d.root.iterdir():
                if p.name.startswith(d.store.name):
                    p.unlink()
    print(
        f"\ncrash trials {TRIALS} on {stores} stores, {ingested} ops made durable, "
        f"kills {dict(kills)}, "
        f"in-transaction kills rolled back {rolled_back}, "
        f"committed before the ack {committed_unacked}"
    )
    assert kills["statement"] + kills["commit"] >= TRIALS // 4, kills  # most land mid-batch
