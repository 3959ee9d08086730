"""The SQLite store on real files: persistence, refusal of bad files, locking."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tracemalloc
from contextlib import closing
from pathlib import Path

import pytest

from gossipmind.core.errors import IdentityError, StoreError
from gossipmind.core.replica import FOLD_VERSION
from gossipmind.core.snapshot import snapshot
from gossipmind.store.keyfile import new_identity, read_key, write_key
from gossipmind.store.queries import Reader
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, History, sample_report


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_10k_ops_written_closed_reopened_give_the_same_root(tmp_path: Path) -> None:
    kb = KB(seed=5)
    for name in ("a", "b", "c"):
        kb.grant("admin", name, "member")
        kb.sync("admin", name)
    for i in range(10_000):
        kb.report("abc"[i % 3], service="search", count=1 + i % 4)
    path = tmp_path / "kb.sqlite3"
    store = Store.create(path, kb.genesis)
    ops = kb.ops[1:]
    for start in range(0, len(ops), 700):
        store.ingest(ops[start : start + 700])
    root, snap = store.replica.root(), snapshot(store.replica)
    assert len(store.replica.meta) == len(kb.ops)
    store.close()
    with Store.open(path) as again:
        assert again.replica.root() == root
        assert snapshot(again.replica) == snap
    with Reader(path) as reader:
        st = reader.status()
        assert st["root"] == root
        assert st["ops"] == len(kb.ops)
        assert reader.patterns()[0]["count"] == snap["patterns"][0]["count"]


def test_materialised_tables_match_the_fold_for_random_histories(tmp_path: Path) -> None:
    for seed in range(5):
        h = History(seed, steps=60)
        path = tmp_path / f"kb{seed}.sqlite3"
        store = Store.create(path, h.kb.genesis)
        ops = h.kb.ops[1:]
        for start in range(0, len(ops), 7):  # small batches: many incremental writes
            store.ingest(ops[start : start + 7])
        snap = snapshot(store.replica)
        store.close()
        with Reader(path) as r:
            assert r.fixes() == snap["fixes"]
            assert r.patterns(limit=10_000) == sorted(
                snap["patterns"], key=lambda p: (-p["reporters"], -p["count"], p["pattern"])
            )
            assert r.members() == snap["members"]
            assert r.goals() == snap["goals"]
            assert r.status()["root"] == snap["root"]


def test_rows_written_by_older_fold_rules_are_rewritten_at_open(tmp_path: Path) -> None:
    """A store from before FOLD_VERSION (no `fold` key in meta) holds rows the
    new rules compute differently; opening it rewrites them, ops untouched."""
    h = History(4, steps=80)
    path = tmp_path / "kb.sqlite3"
    with Store.create(path, h.kb.genesis) as store:
        store.ingest(h.kb.ops[1:])
        snap = snapshot(store.replica)
        snap_ops = list(store.replica.meta)
    with sqlite3.connect(path) as c:  # what an older release left: stale rows, no version
        stamp = c.execute("SELECT value FROM meta WHERE key = 'fold'").fetchone()[0]
        assert stamp == f"{FOLD_VERSION}:{len(snap_ops)}".encode()
        c.execute("DELETE FROM meta WHERE key = 'fold'")
        c.execute("UPDATE members SET doc = (SELECT doc FROM members LIMIT 1)")
        c.execute("DELETE FROM fixes")
        c.execute("UPDATE patterns SET count = count + 1")
        ops_before = c.execute("SELECT id, raw FROM ops ORDER BY ord").fetchall()
    c.close()
    with Reader(path) as r:
        assert r.members() != snap["members"]  # the stale rows are what a reader sees
    with Store.open(path) as store:
        assert snapshot(store.replica) == snap
    with Reader(path) as r:
        assert r.members() == snap["members"] and r.fixes() == snap["fixes"]
        assert sorted(p["count"] for p in r.patterns(limit=10_000)) == sorted(
            p["count"] for p in snap["patterns"]
        )
    with closing(sqlite3.connect(path)) as c:
        assert c.execute("SELECT id, raw FROM ops ORDER BY ord").fetchall() == ops_before
        assert c.execute("SELECT value FROM meta WHERE key = 'fold'").fetchone() == (stamp,)


def test_rows_are_rewritten_when_an_older_release_added_ops_after_the_stamp(
    tmp_path: Path,
) -> None:
    """A rollback: an older release (no stamp of its own) applies more ops and
    writes rows by its rules; the stamp then counts fewer ops than the store
    holds, and the next open rewrites the rows."""
    h = History(5, steps=80)
    ops = h.kb.ops[1:]
    path = tmp_path / "kb.sqlite3"
    with Store.create(path, h.kb.genesis) as store:
        store.ingest(ops[: len(ops) // 2])
    with closing(sqlite3.connect(path)) as c:
        old_stamp = c.execute("SELECT value FROM meta WHERE key = 'fold'").fetchone()[0]
    with Store.open(path) as store:  # stands in for the older release's writes
        store.ingest(ops[len(ops) // 2 :])
        snap = snapshot(store.replica)
    with closing(sqlite3.connect(path)) as c:
        c.execute("UPDATE meta SET value = ? WHERE key = 'fold'", (old_stamp,))
        c.execute("UPDATE members SET doc = (SELECT doc FROM members LIMIT 1)")
        c.commit()
    with Store.open(path):
        pass
    with Reader(path) as r:
        assert r.members() == snap["members"]


def test_rejected_and_pending_survive_a_reopen(tmp_path: Path) -> None:
    kb = KB()
    kb.grant("admin", "a", "member")
    kb.sync("admin", "a")
    kb.report("a")
    parent = kb.report("a")
    child = kb.report("a")
    junk = kb.forge("stranger", "pattern.report", sample_report())
    path = tmp_path / "kb.sqlite3"
    with Store.create(path, kb.genesis) as store:
        store.ingest([*kb.ops[1:-3], child, junk])
        assert child.id in store.replica.pending
        assert junk.id in store.replica.rejected
    with Store.open(path) as store:
        assert child.id in store.replica.pending
        assert junk.id in store.replica.rejected
        assert not store.ingest([junk]).rejected  # known junk is not re-verified
        result = store.ingest([parent])
        assert [op.id for op in result.applied] == [parent.id, child.id]
    with Store.open(path) as store:
        assert not store.replica.pending


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    kb = KB()
    path = tmp_path / "kb.sqlite3"
    with Store.create(path, kb.genesis), pytest.raises(StoreError, match="another process"):
        Store.open(path)
    with Reader(path) as r:  # readers are always welcome
        assert r.status()["ops"] == 1


def test_foreign_sqlite_file_is_refused_and_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(StoreError, match="not a gossipmind store"):
        Store.open(path)
    with pytest.raises(StoreError, match="not a gossipmind store"):
        Reader(path)
    assert digest(path) == before


def test_newer_schema_version_is_refused_and_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite3"
    Store.create(path, KB().genesis).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(StoreError, match="newer than this gossipmind supports"):
        Store.open(path)
    assert digest(path) == before


@pytest.mark.parametrize(
    "content", [b"", b"garbage" * 1000, b"SQLite format 3\x00" + b"\xff" * 4000]
)
def test_corrupt_file_is_refused_and_unchanged(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "kb.sqlite3"
    path.write_bytes(content)
    with pytest.raises(StoreError):
        Store.open(path)
    assert path.read_bytes() == content


def test_truncated_store_is_refused_and_unchanged(tmp_path: Path) -> None:
    kb = KB()
    kb.grant("admin", "a", "member")
    kb.sync("admin", "a")
    for _ in range(300):
        kb.report("a", template="x" * 200)
    path = tmp_path / "kb.sqlite3"
    with Store.create(path, kb.genesis) as store:
        store.ingest(kb.ops[1:])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = digest(path)
    with pytest.raises(StoreError, match=r"corrupt|malformed|not a"):
        Store.open(path)
    assert digest(path) == before


def test_missing_store_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store"):
        Store.open(tmp_path / "nope.sqlite3")


def test_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    ident = new_identity()
    write_key(path, ident)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert read_key(path) == ident
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        write_key(path, new_identity())
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match="must be 0600"):
        read_key(path)


def test_encrypted_key_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    ident = new_identity()
    write_key(path, ident, "s3cret")
    assert ident.seed not in path.read_bytes()
    assert read_key(path, "s3cret") == ident
    with pytest.raises(IdentityError, match="wrong passphrase"):
        read_key(path, "guess")


def test_ops_asked_for_by_id_come_in_causal_order_and_are_read_lazily(tmp_path: Path) -> None:
    kb = KB(seed=9)
    kb.grant("admin", "a", "member")
    kb.sync("admin", "a")
    for i in range(400):
        kb.write("a", "pattern.report", sample_report(template=f"lazy {i} " + "y" * 200 + " <*>"))
    with Store.create(tmp_path / "kb.sqlite3", kb.genesis, synchronous="NORMAL") as store:
        store.ingest(kb.ops[1:])
        ops = kb.ops[2:]
        unknown = [bytes(32), b"\x01" * 32]
        asked = [op.id for op in reversed(ops)] + unknown  # any order, some not held
        assert list(store.raws_in_order(asked)) == [op.raw for op in ops]
        total = sum(len(op.raw) for op in ops)
        tracemalloc.start()
        try:
            for raw in store.raws_in_order(asked):  # consumed one by one, as a session does
                del raw
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < total / 4  # never all of them at once


def test_a_write_that_fails_outside_sqlite_breaks_the_store_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any failure inside a write (not only sqlite3.Error) leaves the store marked
    unusable with a StoreError: the replica applied ops the file does not hold."""
    kb = KB(seed=4)
    kb.grant("admin", "agent", "member")
    kb.sync("admin", "agent")
    path = tmp_path / "kb.sqlite3"
    store = Store.create(path, kb.genesis)
    store.ingest(kb.ops[1:2])

    def overflow(*_args: object) -> None:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    monkeypatch.setattr(Store, "_write", overflow)
    with pytest.raises(StoreError, match="OverflowError"):
        store.ingest([kb.report("agent")])
    assert store.broken is not None and "OverflowError" in store.broken
    with pytest.raises(StoreError, match="unusable"):
        store.ingest([kb.report("agent")])
    monkeypatch.undo()
    store.close()
    reopened = Store.open(path)  # nothing half-written: the file is as before
    assert len(reopened.replica.meta) == 2
    reopened.close()
