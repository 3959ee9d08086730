"""Checkpoints on a thread of the store's own (store.checkpoint), on real SQLite files.

SQLite's autocheckpoint ran inside the commit that crossed 1 000 pages of log: on
a node, on the event loop (the slowest samples of ``bench convergence``: ~13 ms
of CPU and ~25 ms blocked in one ingest). The writer no longer checkpoints,
except past the hard limit; nothing about what is stored changes.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from gossipmind.core.errors import StoreError
from gossipmind.core.snapshot import snapshot
from gossipmind.store import checkpoint
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB

OPS = 3000


@pytest.fixture(scope="module")
def history() -> KB:
    kb = KB(seed=5)
    for i in range(OPS):
        kb.report("admin", service=f"svc{i % 30}", operation=f"op{i}", count=1 + i % 4)
    return kb


def wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def ingest_in_batches(store: Store, kb: KB, size: int = 100) -> None:
    ops = kb.ops[1:]
    for start in range(0, len(ops), size):
        store.ingest(ops[start : start + size])


def same_after_reopen(path: Path, store: Store) -> None:
    root, snap, count = store.replica.root(), snapshot(store.replica), len(store.replica.meta)
    store.close()
    assert not wal(path).exists()  # a clean stop leaves no -wal: the writer closed last
    with Store.open(path) as again:
        assert (again.replica.root(), snapshot(again.replica)) == (root, snap)
        assert len(again.replica.meta) == count == OPS + 1


def test_a_writer_that_stays_small_never_starts_the_thread(tmp_path: Path, history: KB) -> None:
    path = tmp_path / "kb.sqlite3"
    with Store.create(path, history.genesis) as store:
        store.ingest(history.ops[1:50])
        assert store.checkpoints._thread is None
        assert store.checkpoints.stats == checkpoint.CheckpointStats()


def test_checkpoints_run_beside_a_writer_that_keeps_committing(
    tmp_path: Path, history: KB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log limit of 64 KiB: the thread is woken after nearly every batch while the
    writer commits the next ones. Every op is there after a reopen, with the same
    state. The -wal stayed under 4 MiB: without checkpoints these batches make a
    log of ~19 MiB."""
    monkeypatch.setattr(checkpoint, "WAL_SIZE_LIMIT", 64 * 1024)
    monkeypatch.setattr(checkpoint, "WAL_HARD_LIMIT", 64 * 1024 * 1024)
    path = tmp_path / "kb.sqlite3"
    store = Store.create(path, history.genesis)
    largest = 0
    ops = history.ops[1:]
    try:
        for start in range(0, len(ops), 100):
            # (signatures checked when made: the verify pool's threads, not the
            # subject here, would take the cores from the checkpointer under -n 2)
            store.ingest(ops[start : start + 100], verified=True)
            largest = max(largest, wal(path).stat().st_size)
            # a node's batches come at the network's pace, not back to back: 10 ms
            # between them, so the thread is not starved of the GIL by the test
            # itself when other processes take the cores (it was, under -n 2)
            time.sleep(0.01)
        assert store.checkpoints.wait_idle(60)
        stats = store.checkpoints.stats
        assert stats.background >= 5 and stats.failed == 0, stats
        assert stats.inline == 0  # the log never reached the (raised) hard limit
        assert path.stat().st_size > 1024 * 1024  # the pages were copied into the store
        assert largest < 4 * 1024 * 1024, largest  # ~1.5 MiB measured
        same_after_reopen(path, store)
    finally:
        store.close()  # (again, after a failure: no thread left for the next tests)
    assert store.checkpoints._thread is not None and not store.checkpoints._thread.is_alive()


def test_past_the_hard_limit_the_writer_checkpoints_in_its_commit(
    tmp_path: Path, history: KB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread that never gets to run (it is never woken here): the writer runs the
    checkpoint itself once the log passes the hard limit, so the log stays bounded."""
    monkeypatch.setattr(checkpoint, "WAL_HARD_LIMIT", 256 * 1024)
    monkeypatch.setattr(checkpoint.Checkpointer, "_want", lambda self: None)
    path = tmp_path / "kb.sqlite3"
    store = Store.create(path, history.genesis)
    on_writer: list[str] = []
    store.conn.set_trace_callback(on_writer.append)
    ingest_in_batches(store, history)
    stats = store.checkpoints.stats
    assert stats.inline >= 1 and stats.background == 0 and stats.failed == 0, stats
    assert [s for s in on_writer if "wal_checkpoint" in s.lower()]
    assert store.checkpoints._thread is None
    same_after_reopen(path, store)


def test_a_checkpoint_that_fails_is_counted_logged_and_loses_nothing(
    tmp_path: Path, history: KB, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The thread cannot open its connection (as on a store whose directory went
    read-only): each attempt is counted and logged, the thread keeps serving, the
    writer keeps committing, and every op is in the store."""
    monkeypatch.setattr(checkpoint, "WAL_SIZE_LIMIT", 64 * 1024)

    def refuse(path: Path, *, readonly: bool) -> None:
        raise StoreError(f"cannot open {path}: attempt to write a readonly database")

    caplog.set_level(logging.WARNING, logger="gossipmind.store.checkpoint")
    path = tmp_path / "kb.sqlite3"
    store = Store.create(path, history.genesis)
    monkeypatch.setattr(checkpoint.sqlfile, "connect", refuse)  # the store's is open
    ingest_in_batches(store, history)
    assert store.checkpoints.wait_idle(60)
    stats = store.checkpoints.stats
    assert stats.failed >= 2 and stats.background == 0, stats  # tried again, not given up
    assert "readonly database" in stats.last_error
    assert store.checkpoints._thread is not None and store.checkpoints._thread.is_alive()
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings and "checkpoint of" in warnings[0] and "in the background failed" in warnings[0]
    monkeypatch.undo()  # reopening needs the real connect
    same_after_reopen(path, store)


def test_an_open_that_fails_after_the_thread_started_stops_it(
    tmp_path: Path, history: KB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit during the open (rows rewritten for a new fold version) can start
    the thread; an open that then fails must not leave it, and its connection,
    behind."""
    path = tmp_path / "kb.sqlite3"
    Store.create(path, history.genesis).close()

    def fail(store: Store) -> None:
        store.checkpoints._want()  # as a large commit of the open would
        raise StoreError("the open fails here")

    monkeypatch.setattr(Store, "_restore_genesis", fail)
    before = set(threading.enumerate())
    with pytest.raises(StoreError, match="the open fails here"):
        Store.open(path)
    alive = [
        t.name
        for t in set(threading.enumerate()) - before  # (not another test's)
        if t.name.startswith("gossipmind-checkpoint")
    ]
    assert alive == []


def test_a_thread_that_cannot_start_loses_no_write_and_no_lock(
    tmp_path: Path, history: KB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a thread limit ``Thread.start`` raises: the commit that asked for a
    checkpoint still succeeds (it was reported failed and the store marked
    broken), the failure is counted, the hard limit still bounds the log, and
    close releases the store (it left the lock held)."""
    monkeypatch.setattr(checkpoint, "WAL_SIZE_LIMIT", 64 * 1024)
    monkeypatch.setattr(checkpoint, "WAL_HARD_LIMIT", 1024 * 1024)
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name.startswith("gossipmind-checkpoint"):
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    path = tmp_path / "kb.sqlite3"
    store = Store.create(path, history.genesis)
    ingest_in_batches(store, history)
    assert store.broken is None
    stats = store.checkpoints.stats
    assert stats.failed >= 1 and "can't start new thread" in stats.last_error, stats
    assert stats.inline >= 1 and stats.background == 0, stats
    assert store.checkpoints.wait_idle(0)  # nothing waits for a thread that is not there
    same_after_reopen(path, store)  # closed cleanly, lock released: it reopens
