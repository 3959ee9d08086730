"""SIGKILL a node while it takes reports, at every kind of point: nothing it
acknowledged is lost, nothing is counted twice (node/reporter.py, store/journal.py).

Each trial runs ``report_crash_worker.py``: a real node (real SQLite store, the
group commit of node/writes.py, the reporter's journal and its hold, on the
in-memory network) takes bursts of concurrent failure and outcome reports with a
small window and a hold of a few windows, so that one steady stream is held while
others are written. Some reports carry an SDK id, some none; some ids are sent
twice at once (an SDK that re-sent while the first answer was on its way) or again
later (after an answer that never came, or after a restart). The test kills the
worker with SIGKILL at one of:

* ``statement``: right after it announced the k-th SQL statement of its j-th
  transaction (a journal commit, an op's commit, or the stop's last write);
* ``write``: the same, in the j-th transaction that deletes (an op's commit: its
  ops, their report ids, the deletion of their journal rows; or a stop's write);
* ``commit``: right after it announced the j-th ``COMMIT``;
* ``ack``: a random fraction of a millisecond after its j-th acknowledgement;
* ``resend``: at once after the first answer to an id sent twice at once;
* ``delay``: a random delay after start-up;

or lets it run and stop cleanly (``none``). After each trial, on the files left:
for every pattern and fix, what the fold counts plus what the journal holds is at
least what was acknowledged and at most that plus the reports in doubt (sent, no
answer); no id is both committed and journaled; every acknowledged id is one of
them. Reports in doubt with an id are sent again by the next trial (as the SDK
does). At the end a worker recovers the journal, takes every in-doubt id and a
sample of acknowledged ids again, and stops cleanly: the journal is empty and
every acknowledged report is counted exactly once (exactly: for the streams whose
reports all carry an id; within the in-doubt reports without one otherwise).

``GOSSIPMIND_CRASH_TRIALS`` scales the trial count (default 30, ~20 s); the
seed is ``GOSSIPMIND_CRASH_SEED`` (default 7).
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from report_crash_worker import failure, fix_id  # (its directory is on sys.path: pytest)

from gossipmind.core import encoding
from gossipmind.learn.patterns import reduce
from gossipmind.store import journal
from gossipmind.store.datadir import DataDir
from gossipmind.store.sqlite import Store
from gossipmind.testnet.setup import prepare

WORKER = Path(__file__).with_name("report_crash_worker.py")

TRIALS = int(os.environ.get("GOSSIPMIND_CRASH_TRIALS", "30"))
SEED = int(os.environ.get("GOSSIPMIND_CRASH_SEED", "7"))
WINDOW_MS = 15
HOLD_MS = 90  # a steady stream is written after 1, 2, 4 windows, then every 6
PATTERNS = 4  # 0: steady, every report with an id (held); 1: steady, a quarter without
FIXES = 2  # 0: steady, with ids (held); 1: sparse, half without
KINDS = ("statement", "write", "write", "commit", "ack", "resend", "delay", "none")
ALL_IDS = {("p", 0), ("p", 2), ("p", 3), ("f", 0)}  # streams whose reports all have ids


@dataclass
class Ledger:
    """What the test sent, and what the worker acknowledged, over all trials."""

    reports: dict[int, list[Any]] = field(default_factory=dict)  # index -> report
    acked: set[int] = field(default_factory=set)
    doubt: set[int] = field(default_factory=set)  # sent, never answered
    resend: set[int] = field(default_factory=set)  # with an id, not acknowledged yet
    next: int = 0

    def new(self, rng: random.Random) -> list[Any]:
        """One more report of the mix (see PATTERNS, FIXES)."""
        i, self.next = self.next, self.next + 1
        roll = rng.random()
        rid: bytes | None = secrets.token_bytes(16)
        if roll < 0.35:
            key, attempts, successes = 0, 0, 0
        elif roll < 0.6:
            key, attempts, successes = 1, 0, 0
            rid = rid if rng.random() < 0.75 else None
        elif roll < 0.67:
            key, attempts, successes = rng.choice((2, 3)), 0, 0
        elif roll < 0.92:
            key, attempts = 0, rng.randint(1, 4)
            successes = rng.randint(0, attempts)
        else:
            key, attempts = 1, rng.randint(1, 4)
            successes = rng.randint(0, attempts)
            rid = rid if rng.random() < 0.5 else None
        report = [i, rid, key, attempts, successes]
        self.reports[i] = report
        return report

    def plan(self, rng: random.Random, n: int) -> list[list[Any]]:
        """Bursts: the ids in doubt again first, then ``n`` new reports, some ids twice
        in one burst, some acknowledged ids again."""
        again = [self.reports[i] for i in sorted(self.resend)]
        bursts: list[list[Any]] = [[0, again]] if again else []
        made = 0
        while made < n:
            size = rng.choice((1, 1, 1, 2, 3, 5, 8))
            burst = [self.new(rng) for _ in range(size)]
            made += size
            first = rng.choice(burst)
            if first[1] is not None and rng.random() < 0.15:  # sent again while its answer
                burst.append(first)  # was on its way (only an id makes that a re-send)
            if self.acked and rng.random() < 0.1:  # an acknowledged one, again
                old = self.reports[rng.choice(sorted(self.acked))]
                if old[1] is not None:
                    burst.append(old)
            bursts.append([rng.choice((0, 0, 1, 2, 4)), burst])
        return bursts

    def key(self, i: int) -> tuple[str, int]:
        r = self.reports[i]
        return ("p" if r[3] == 0 else "f", r[2])

    def bounds(self) -> dict[tuple[str, int], tuple[list[int], list[int]]]:
        """Per stream: [count, attempts, successes] acknowledged, and at most."""
        out: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        for k in [("p", p) for p in range(PATTERNS)] + [("f", f) for f in range(FIXES)]:
            out[k] = ([0, 0, 0], [0, 0, 0])
        for i in self.acked | self.doubt:
            _, _, _, attempts, successes = self.reports[i]
            lo, hi = out[self.key(i)]
            one = [int(attempts == 0), attempts, successes]
            for j in range(3):
                hi[j] += one[j]
                lo[j] += one[j] if i in self.acked else 0
        return out


def counted(path: Path) -> tuple[dict[tuple[str, int], list[int]], set[bytes], set[bytes]]:
    """Per stream, what the fold counts plus what the journal holds; the SDK ids
    committed; the SDK ids journaled. Asserts that no id is both."""
    out: dict[tuple[str, int], list[int]] = {}
    pids = {reduce(failure(p, 0)).pattern: p for p in range(PATTERNS)}
    fids = {fix_id(f): f for f in range(FIXES)}
    with Store.open(path) as store:
        fold = store.replica.fold
        for pid, p in pids.items():
            info = fold.patterns.get(pid)
            out[("p", p)] = [info.count if info else 0, 0, 0]
        for fid, f in fids.items():
            agg = fold.fixes.get(fid)
            o = [sum(v[j] for v in agg.outcomes.values()) for j in (0, 1)] if agg else [0, 0]
            out[("f", f)] = [0, *o]
        committed = {bytes(r[0]) for r in store.conn.execute("SELECT id FROM report_ids")}
        journaled: set[bytes] = set()
        for key, sdk, kind, _ts, data in journal.load(store.conn):
            v = encoding.decode(data)
            if kind == "pattern.report":
                out[("p", pids[v[0]])][0] += 1
            else:
                c = out[("f", fids[v[0]])]
                c[1] += v[1]
                c[2] += v[2]
            if sdk:
                journaled.add(key)
    assert not committed & journaled, "an id is both committed with its op and journaled"
    return out, committed, journaled


@dataclass
class Trial:
    where: str
    sent: int
    acked: int
    recovered: int
    duplicates: int | None


def run(data: Path, plan: list[list[Any]], ledger: Ledger, rng: random.Random, kind: str) -> Trial:
    """Run the worker on ``plan``; SIGKILL it at a point of ``kind`` (``none``: never).
    What it said before it died (still in the pipe) is read after the kill."""
    plan_file = data.parent / "plan.bin"
    plan_file.write_bytes(encoding.encode(plan))
    nth = rng.randint(1, {"statement": 35, "commit": 35, "write": 6}.get(kind, 80))
    statement = rng.randint(1, 20)  # (past a transaction's last: its COMMIT)
    cmd = [sys.executable, str(WORKER), str(data), str(plan_file), str(WINDOW_MS), str(HOLD_MS)]
    proc = subprocess.Popen([*cmd, "trace"], stdout=subprocess.PIPE, text=True)
    t = Trial("exited", 0, 0, -1, None)
    n = {"begin": 0, "commit": 0, "statement": 0, "writes": 0, "write": 0}
    answered: set[int] = set()
    sends: Counter[int] = Counter()

    def said(line: str) -> str | None:
        """Account for one line; returns where to kill, if here."""
        word = line.split()
        if word[0] == "T":
            if word[1].startswith("BEGIN"):
                n["begin"], n["statement"], n["write"] = n["begin"] + 1, 0, 0
            elif word[1] == "COMMIT":
                n["commit"] += 1
                if kind in ("commit", "statement") and n["commit"] == nth:
                    return "commit"
                if kind == "write" and n["write"] and n["writes"] == nth:
                    return "commit"
            else:
                n["statement"] += 1
                if kind == "statement" and n["begin"] == nth and n["statement"] == statement:
                    return "statement"
                if word[1] == "DELETE" and not n["write"]:  # an op's transaction: it
                    n["write"], n["writes"] = 1, n["writes"] + 1  # deletes journal rows
                if n["write"] and n["writes"] == nth and n["statement"] >= statement:
                    return "statement" if kind == "write" else None
        elif word[0] == "SEND":
            t.sent += 1
            i = int(word[1])
            sends[i] += 1
            if i not in ledger.acked:
                ledger.doubt.add(i)
        elif word[0] == "ACK":
            i = int(word[1])
            first = i not in answered
            answered.add(i)
            ledger.acked.add(i)
            ledger.doubt.discard(i)
            ledger.resend.discard(i)
            t.acked += 1
            if kind == "ack" and t.acked == nth:
                time.sleep(rng.random() * 0.001)  # where the kill lands
                return "ack"
            if kind == "resend" and first and sends[i] > 1:  # sent twice, answered once
                return "resend"
        elif word[0] == "NACK":  # refused (503): nothing taken; the SDK sends it again
            i = int(word[1])
            if i not in ledger.acked and i not in answered:
                ledger.doubt.discard(i)
                if ledger.reports[i][1] is not None:
                    ledger.resend.add(i)
        elif word[0] == "READY":
            t.recovered = int(word[1])
            if kind == "delay":
                time.sleep(rng.random() * 0.6)  # where the kill lands
                return "delay"
        elif word[0] == "DONE":
            t.duplicates = int(word[1])
            return "done"
        else:
            raise AssertionError(f"worker said {line!r}")
        return None

    try:
        assert proc.stdout is not None
        for _ in range(10**6):  # bounded; each line is one worker event
            line = proc.stdout.readline()
            if not line:
                break
            where = said(line)
            if where is not None:
                t.where = where
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout:
            kind = "drain"  # what it said before it died happened: account for it
            for line in proc.stdout.read().splitlines():
                said(line)
            proc.stdout.close()
    assert t.recovered >= 0, "the worker did not start"
    assert t.where != "exited", "the worker died by itself"
    for i in ledger.doubt:  # in doubt, with an id: the SDK sends it again
        if ledger.reports[i][1] is not None:
            ledger.resend.add(i)
    return t


def check(path: Path, ledger: Ledger, t: Trial) -> None:
    got, committed, journaled = counted(path)
    for k, (lo, hi) in ledger.bounds().items():
        within = all(a <= g <= b for a, g, b in zip(lo, got[k], hi, strict=True))
        assert within, f"{k}: counted {got[k]}, acknowledged {lo}, at most {hi} ({t})"
    ids = {ledger.reports[i][1] for i in ledger.acked} - {None}
    assert ids <= committed | journaled, f"{len(ids - committed - journaled)} acked ids lost ({t})"


@pytest.mark.timeout(max(300, TRIALS * 8))  # a bound that scales with the trial count
def test_sigkill_while_taking_reports_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    data = prepare(tmp_path, 1, 0)[0].dir
    path = DataDir(data).store
    ledger = Ledger()
    kills: Counter[str] = Counter()
    recovered = 0
    for _ in range(TRIALS):
        kind = rng.choice(KINDS)
        t = run(data, ledger.plan(rng, 80), ledger, rng, kind)
        kills[t.where] += 1
        recovered += t.recovered
        check(path, ledger, t)
        if t.where == "done":
            assert not journal_left(path), t
    # the last start: recover, take the ids in doubt and some acknowledged ones
    # again, stop cleanly
    again = sorted(ledger.resend) + rng.sample(sorted(ledger.acked), min(20, len(ledger.acked)))
    plan = [[0, [ledger.reports[i] for i in again if ledger.reports[i][1] is not None]]]
    t = run(data, plan, ledger, rng, "none")
    assert t.where == "done" and not ledger.resend, t
    assert not journal_left(path), "rows left in the journal after a clean stop"
    check(path, ledger, t)
    got, _, _ = counted(path)
    bounds = ledger.bounds()
    for k in ALL_IDS:  # every report of these has an id: nothing in doubt, exact
        assert got[k] == bounds[k][0] == bounds[k][1], (k, got[k], bounds[k])
    print(
        f"\nreport crash trials {TRIALS}: kills {dict(kills)}, {len(ledger.acked)} reports "
        f"acknowledged of {ledger.next}, {recovered} journal rows recovered at starts, "
        f"{len(ledger.doubt)} without an id left in doubt, duplicates at the last start "
        f"{t.duplicates}"
    )
    assert kills["statement"] + kills["commit"] >= TRIALS // 4, kills


def journal_left(path: Path) -> int:
    with Store.open(path) as store:
        return len(journal.load(store.conn))
