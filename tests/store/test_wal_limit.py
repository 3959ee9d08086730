"""The store's -wal shrinks back to WAL_SIZE_LIMIT while the node runs, and its
checkpoints run on a thread of their own (store.checkpoint).

Before: no ``journal_size_limit``, so after a large catch-up the ``-wal`` kept its
high-water mark (33 MiB measured in a soak) until the store was closed; a
checkpoint makes SQLite write the log from its start again, never shorten it.
And SQLite's autocheckpoint ran inside a commit, on the node's event loop.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from gossipmind.core.snapshot import snapshot
from gossipmind.store import checkpoint
from gossipmind.store.sqlite import WAL_SIZE_LIMIT, Store
from gossipmind.testing import KB, sample_report

CATCH_UP = 20_000  # ops: ~1 KiB of -wal each, well over twice the limit in one go
MAX_SMALL_WRITES = 3  # the later writes that may be needed before the log restarts


@pytest.fixture(scope="module")
def history() -> KB:
    kb = KB(seed=11)
    for i in range(CATCH_UP):
        kb.report("admin", service=f"svc{i % 40}", operation=f"op{i}", count=1 + i % 3)
    return kb


def wal_size(path: Path) -> int:
    return path.with_name(path.name + "-wal").stat().st_size


def small_writes_until_within_limit(store: Store, kb: KB, path: Path) -> int:
    """Commit single ops (what a running node does next), at most MAX_SMALL_WRITES;
    return how many it took for the -wal to be within the limit (or the cap)."""
    admin = kb.identity("admin")
    for i in range(1, MAX_SMALL_WRITES + 1):
        body = sample_report(service="later", operation=f"w{i}")
        store.create_op(admin, "pattern.report", body, CATCH_UP + 10 + i)
        assert store.checkpoints.wait_idle(60)  # the checkpoint it may have asked for
        if wal_size(path) <= WAL_SIZE_LIMIT:
            return i
    return MAX_SMALL_WRITES


def reopened_matches(path: Path, store: Store) -> None:
    """Nothing about what is stored changed: the same ops and state after a reopen."""
    root, snap, count = store.replica.root(), snapshot(store.replica), len(store.replica.meta)
    store.close()
    with Store.open(path) as again:
        assert again.replica.root() == root
        assert snapshot(again.replica) == snap
        assert len(again.replica.meta) == count


def test_the_writer_connection_sets_the_limit_and_keeps_its_durability(tmp_path: Path) -> None:
    kb = KB(seed=3)
    path = tmp_path / "kb.sqlite3"
    with Store.create(path, kb.genesis) as store:
        pragma = store.conn.execute
        assert pragma("PRAGMA journal_size_limit").fetchone()[0] == WAL_SIZE_LIMIT
        assert pragma("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # the thread's job
        assert pragma("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert pragma("PRAGMA synchronous").fetchone()[0] == 2  # FULL, the default
    with Store.open(path, synchronous="NORMAL") as store:
        assert store.conn.execute("PRAGMA journal_size_limit").fetchone()[0] == WAL_SIZE_LIMIT
        assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1


def test_the_wal_of_one_large_catch_up_batch_shrinks_at_the_next_write(
    tmp_path: Path, history: KB
) -> None:
    """One batch (one transaction) of 20 000 ops grows the -wal to ~20 MiB; the
    store's checkpoint thread copies it back (the writer's commit does not: no
    checkpoint statement ran on the writer's connection), and the next write,
    which starts the log again, truncates it to the limit while the store stays
    open."""
    path = tmp_path / "kb.sqlite3"
    store = Store.create(path, history.genesis)
    on_writer: list[str] = []
    store.conn.set_trace_callback(on_writer.append)
    try:
        store.ingest(history.ops[1:])
        high = wal_size(path)
        assert high > 2 * WAL_SIZE_LIMIT, f"the test must grow the -wal past the limit: {high}"
        assert high < checkpoint.WAL_HARD_LIMIT  # so the thread's, not the writer's, job
        assert store.checkpoints.wait_idle(60)
        assert store.checkpoints.stats.background >= 1, store.checkpoints.stats
        assert store.checkpoints.stats.inline == 0 and store.checkpoints.stats.failed == 0
        assert not [s for s in on_writer if "checkpoint" in s.lower()], on_writer
        writes = small_writes_until_within_limit(store, history, path)
        assert wal_size(path) <= WAL_SIZE_LIMIT, (high, wal_size(path), writes)
        assert writes == 1, writes
    except BaseException:
        store.close()
        raise
    reopened_matches(path, store)


@pytest.mark.parametrize("path_taken", ["inline", "background"])
def test_the_wal_grown_while_a_reader_held_a_snapshot_shrinks_once_it_is_gone(
    tmp_path: Path, history: KB, monkeypatch: pytest.MonkeyPatch, path_taken: str
) -> None:
    """Batches committed while a reader (an API request, `gossipmind status`) holds an
    old snapshot cannot be checkpointed back, so the log grows across commits (to
    ~90 MiB); once the reader is gone the next checkpoint completes and the log is
    truncated. That checkpoint is the writer's own (the log is past the hard
    limit), or, with the hard limit out of reach, the thread's."""
    if path_taken == "background":
        monkeypatch.setattr(checkpoint, "WAL_HARD_LIMIT", 1 << 40)
    path = tmp_path / "kb.sqlite3"
    store = Store.create(path, history.genesis)
    try:
        ops = history.ops[1:]
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM ops").fetchone()  # holds its snapshot
            for start in range(0, len(ops), 1000):
                store.ingest(ops[start : start + 1000])
            high = wal_size(path)
            assert high > 2 * WAL_SIZE_LIMIT, f"the -wal must grow past the limit: {high}"
            reader.execute("COMMIT")
        writes = small_writes_until_within_limit(store, history, path)
        assert wal_size(path) <= WAL_SIZE_LIMIT, (high, wal_size(path), writes)
        assert writes <= 2, writes  # one checkpoints it all back, the next restarts the log
        stats = store.checkpoints.stats
        assert stats.incomplete >= 1  # while the reader held its snapshot
        assert (stats.inline if path_taken == "inline" else stats.background) >= 1, stats
    except BaseException:
        store.close()
        raise
    reopened_matches(path, store)
