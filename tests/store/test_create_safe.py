"""Creating a store is exclusive and crash-safe (real processes, real files):

* two processes creating one data dir's store at once: one succeeds, the other is
  refused with a clear error, and the store is whole (no bogus I/O errors, no
  store renamed over a live one);
* a SIGKILL at any step of a creation leaves no store (and a retry succeeds) or a
  complete, healthy one, never one without its genesis op;
* a store that an older release left without its genesis row is repaired when it
  is opened for writing;
* a ``-wal`` left by a removed store is never replayed into a new one.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from gossipmind.core.errors import StoreError
from gossipmind.core.replica import Replica
from gossipmind.store.datadir import DataDir, dump_genesis
from gossipmind.store.doctor import diagnose
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB

CREATE = r"""
import sys, time
from pathlib import Path
from gossipmind.store.datadir import load_genesis
from gossipmind.store.sqlite import Store
genesis = load_genesis(Path(sys.argv[2]))
start = float(sys.argv[3])
while time.time() < start:  # both processes released at one instant
    time.sleep(0.0005)
try:
    Store.create(Path(sys.argv[1]), genesis).close()
    print("created")
except Exception as exc:
    print("error", type(exc).__name__, exc)
"""


def genesis_file(tmp_path: Path, kb: KB) -> Path:
    path = tmp_path / "genesis.json"
    path.write_text(dump_genesis(kb.genesis))
    return path


def strays(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".creating" in p.name)


def test_two_processes_creating_one_store_one_wins_the_other_is_refused(tmp_path: Path) -> None:
    """Before: both processes unlinked or renamed each other's `kb.sqlite3.creating`
    and both failed with "disk I/O error" in 14 of 20 trials."""
    kb = KB(seed=3)
    gfile = genesis_file(tmp_path, kb)
    for trial in range(8):
        d = tmp_path / f"d{trial}"
        d.mkdir(mode=0o700)
        start = str(time.time() + 1.0)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CREATE, str(d / "kb.sqlite3"), str(gfile), start],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=60)[0].strip() for p in procs]
        assert outs.count("created") == 1, (trial, outs)
        loser = next(o for o in outs if o != "created")
        assert loser.startswith("error Store"), (trial, outs)
        assert ("is in use: another process holds the lock" in loser) or (
            "already exists" in loser
        ), (trial, outs)
        diag = diagnose(DataDir(d))
        assert {f.check for f in diag.errors} == set(), (trial, diag.errors)
        assert diag.stats["ops"] == 1
        assert strays(d) == []


RACE_A = r"""
import sys, time
from pathlib import Path
from gossipmind.core.identity import Identity
from gossipmind.store.datadir import load_genesis
from gossipmind.store.sqlite import Store
from gossipmind.testing import sample_report
store, genesis = Path(sys.argv[1]), load_genesis(Path(sys.argv[2]))
ident, marker = Identity(bytes.fromhex(sys.argv[3])), Path(sys.argv[4])
for _ in range(600):  # until B has seen no store (at most 30 s)
    if marker.exists():
        break
    time.sleep(0.05)
try:
    s = Store.create(store, genesis)
except Exception as exc:
    print("A refused", type(exc).__name__, exc, flush=True)
    sys.exit(0)
print("A inode", store.stat().st_ino, flush=True)
acked = 0
for i in range(6):  # a busy node acknowledging ops (each create_ops result is durable)
    t = 1_700_000_000_000 + i
    reqs = [("pattern.report", sample_report(operation=f"op{i}-{j}"), t) for j in range(50)]
    acked += sum(1 for o in s.create_ops(ident, reqs) if not isinstance(o, Exception))
    print("A acked", acked, flush=True)
    time.sleep(0.3)
s.close()
print("A done", acked, flush=True)
"""

RACE_B = r"""
import pathlib, sys, time
from pathlib import Path
from gossipmind.store.datadir import load_genesis
from gossipmind.store.sqlite import Store
store, genesis = Path(sys.argv[1]), load_genesis(Path(sys.argv[2]))
real_exists = pathlib.Path.exists
def slow_exists(self, *a, **k):
    found = real_exists(self, *a, **k)
    if self == store and not found:
        Path(sys.argv[3]).touch()  # A may go on
        time.sleep(1.5)  # B is descheduled right after it saw no store
    return found
pathlib.Path.exists = slow_exists
try:
    Store.create(store, genesis).close()
    print("B created", flush=True)
except Exception as exc:
    print("B refused", type(exc).__name__, exc, flush=True)
"""


def test_a_creator_descheduled_after_its_check_never_replaces_a_live_store(
    tmp_path: Path,
) -> None:
    """Before: B renamed its fresh file over the store A had created and was writing
    to; every op A acknowledged was lost and the store was malformed."""
    kb = KB(seed=4)
    gfile = genesis_file(tmp_path, kb)
    d = tmp_path / "dd"
    d.mkdir(mode=0o700)
    args = [str(d / "kb.sqlite3"), str(gfile)]
    marker = tmp_path / "b-saw-no-store"
    pb = subprocess.Popen(
        [sys.executable, "-c", RACE_B, *args, str(marker)], stdout=subprocess.PIPE, text=True
    )
    pa = subprocess.Popen(
        [sys.executable, "-c", RACE_A, *args, kb.admin.seed.hex(), str(marker)],
        stdout=subprocess.PIPE,
        text=True,
    )
    out_a = pa.communicate(timeout=120)[0]
    out_b = pb.communicate(timeout=120)[0]
    acked = max([int(line.split()[-1]) for line in out_a.splitlines() if "acked" in line] or [0])
    if "A done" in out_a:  # the store A created and wrote to is the one in place
        (inode,) = [int(line.split()[-1]) for line in out_a.splitlines() if "inode" in line]
        assert (d / "kb.sqlite3").stat().st_ino == inode, (out_a, out_b)
    with closing(sqlite3.connect(f"file:{d / 'kb.sqlite3'}?mode=ro", uri=True)) as c:
        stored = c.execute("SELECT COUNT(*) FROM ops WHERE kind = 'pattern.report'").fetchone()[0]
    assert stored == acked, (out_a, out_b)  # every acknowledged op is in the store
    assert ("A done" in out_a) != ("B created" in out_b), (out_a, out_b)  # exactly one creator
    diag = diagnose(DataDir(d))
    assert diag.healthy, diag.errors


KILLER = r"""
import os, signal, sqlite3, sys
from pathlib import Path
from gossipmind.store.datadir import load_genesis
from gossipmind.store.sqlite import Store
path, genesis, point = Path(sys.argv[1]), load_genesis(Path(sys.argv[2])), sys.argv[3]
count = [0]
def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
if point.startswith("sql:"):
    k = int(point[4:])
    real_connect = sqlite3.connect
    def connect(*a, **kw):
        conn = real_connect(*a, **kw)
        def trace(sql):
            count[0] += 1
            if count[0] == k:
                die()
        conn.set_trace_callback(trace)
        return conn
    sqlite3.connect = connect
else:
    real = getattr(os, point.split(":")[1])
    def hooked(*a, **kw):
        if point.startswith("before:"):
            die()
        out = real(*a, **kw)
        die()
    setattr(os, point.split(":")[1], hooked)
Store.create(path, genesis).close()
print("finished", count[0])
"""


def test_a_kill_at_any_step_of_create_leaves_no_store_or_a_healthy_one(tmp_path: Path) -> None:
    """SIGKILL at each SQL statement of a creation (building the file, publishing it,
    its first open) and around the rename/link that publishes it. Before: a kill
    after the file was renamed into place and before the genesis transaction left
    a store without its genesis op (doctor: ops.genesis, fold.root) that a retried
    `network join` refused."""
    kb = KB(seed=5)
    gfile = genesis_file(tmp_path, kb)
    points = ["before:link", "after:link", "before:replace", "after:replace"]
    points += [f"sql:{k}" for k in range(1, 121)]

    def run(n: int) -> subprocess.CompletedProcess[str]:
        d = tmp_path / f"k{n}"
        d.mkdir(mode=0o700)
        return subprocess.run(
            [sys.executable, "-c", KILLER, str(d / "kb.sqlite3"), str(gfile), points[n]],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(len(points))))
    outcomes = {"none": 0, "whole": 0}
    for n, (point, out) in enumerate(zip(points, results, strict=True)):
        d = tmp_path / f"k{n}"
        path = d / "kb.sqlite3"
        if out.returncode == 0:
            assert out.stdout.startswith("finished"), out
            if point.startswith("sql:"):
                break  # past the last statement of a creation
            continue  # that os function is not used
        assert out.returncode == -9, (point, out.returncode, out.stderr[-2000:])
        if path.exists():
            outcomes["whole"] += 1
            diag = diagnose(DataDir(d))  # as left by the kill, before any reopen
            assert {f.check for f in diag.errors} == set(), (point, diag.errors)
            assert diag.stats["ops"] == 1
            with Store.open(path) as store:
                assert store.replica.root() == Replica(kb.genesis).root()
        else:
            outcomes["none"] += 1
            with pytest.raises(StoreError, match="no store"):
                Store.open(path)
            Store.create(path, kb.genesis).close()  # a retry succeeds
            diag = diagnose(DataDir(d))
            assert {f.check for f in diag.errors} == set(), (point, diag.errors)
        assert strays(d) == [], point  # a writer removed the killed creation's files
    else:
        pytest.fail("the creation never finished within the statements tried")
    assert outcomes["none"] > 5 and outcomes["whole"] > 5, outcomes


def test_a_store_left_without_its_genesis_row_is_repaired_when_opened(tmp_path: Path) -> None:
    """What a kill inside the old `create` left: the file published, the genesis op
    never written (and later ops written after it). Opening it for writing now
    writes the genesis row first; doctor then finds it healthy, with the root of
    every other replica."""
    kb = KB(seed=6)
    for i in range(5):
        kb.report("admin", service="s", operation=f"o{i}")
    d = DataDir(tmp_path / "dd")
    d.ensure()
    with Store.create(d.store, kb.genesis) as store:
        store.ingest(kb.ops[1:])
        root, heads = store.replica.root(), set(store.replica.heads)
    with closing(sqlite3.connect(d.store)) as c:
        c.execute("DELETE FROM ops WHERE id = ?", (kb.genesis.id,))
        c.commit()
    assert "ops.genesis" in {f.check for f in diagnose(d).errors}
    with Store.open(d.store) as store:
        assert store.replica.root() == root
    diag = diagnose(d)
    assert diag.healthy, diag.errors
    with closing(sqlite3.connect(d.store)) as c:
        first = c.execute("SELECT ord, id FROM ops ORDER BY ord LIMIT 1").fetchone()
        assert first == (1, kb.genesis.id)
        assert {h for (h,) in c.execute("SELECT id FROM heads")} == heads
    # the store of a creation killed before anything but the file was written
    e = DataDir(tmp_path / "ee")
    e.ensure()
    Store.create(e.store, kb.genesis).close()
    with closing(sqlite3.connect(e.store)) as c:
        c.execute("DELETE FROM ops")
        c.execute("DELETE FROM heads")
        c.commit()
    Store.open(e.store).close()
    diag = diagnose(e)
    assert diag.healthy, diag.errors


def stale_wal(tmp_path: Path) -> tuple[DataDir, KB]:
    """A data dir whose kb.sqlite3 was removed after its writer died, leaving the
    writer's -wal (with committed frames) and -shm behind."""
    old = KB(seed=7)
    for i in range(40):
        old.report("admin", service="old", operation=f"o{i}")
    d = DataDir(tmp_path / "dd")
    d.ensure()
    keep = tmp_path / "wal-copy"
    keep.mkdir()
    with Store.create(d.store, old.genesis) as store:
        store.conn.execute("PRAGMA wal_autocheckpoint = 0")
        store.ingest(old.ops[1:])
        for suffix in ("-wal", "-shm"):  # what a SIGKILL leaves: frames not checkpointed
            shutil.copy(d.root / f"kb.sqlite3{suffix}", keep / f"kb.sqlite3{suffix}")
    d.store.unlink()
    for suffix in ("-wal", "-shm"):
        shutil.copy(keep / f"kb.sqlite3{suffix}", d.root / f"kb.sqlite3{suffix}")
    assert (d.root / "kb.sqlite3-wal").stat().st_size > 0
    return d, old


def test_a_wal_left_by_a_removed_store_is_refused_not_replayed(tmp_path: Path) -> None:
    """Before: the new store got the old WAL replayed into it: malformed at once, or
    (a small old store) silently holding the deleted store's ops."""
    d, _old = stale_wal(tmp_path)
    new = KB(seed=8)
    wal = d.root / "kb.sqlite3-wal"
    before = {p.name: p.read_bytes() for p in d.root.iterdir()}
    with pytest.raises(StoreError) as err:
        Store.create(d.store, new.genesis)
    message = str(err.value)
    assert str(wal) in message and "Nothing was created" in message
    assert {p.name: p.read_bytes() for p in d.root.iterdir() if p.name != "kb.sqlite3.lock"} == {
        k: v for k, v in before.items() if k != "kb.sqlite3.lock"
    }
    wal.unlink()  # what the message says to do (the -shm alone holds nothing)
    with Store.create(d.store, new.genesis) as store:
        assert len(store.replica.meta) == 1
    diag = diagnose(d)
    assert diag.healthy, diag.errors
    assert diag.stats["ops"] == 1 and diag.stats["network"] == new.genesis.id


def test_network_join_names_the_leftover_wal(tmp_path: Path) -> None:
    d, _old = stale_wal(tmp_path)
    gfile = genesis_file(tmp_path, KB(seed=9))
    cmd = [sys.executable, "-c", "from gossipmind.cli.main import main; main()"]
    out = subprocess.run(
        [*cmd, "--data-dir", str(d.root), "network", "join", str(gfile)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 5, out.stderr
    assert "kb.sqlite3-wal is left from a store that is gone" in out.stderr
    assert not d.store.exists()
