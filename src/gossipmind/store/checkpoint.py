"""WAL checkpoints on a thread of their own, not inside a commit.

A store runs SQLite in WAL mode: a commit appends pages to ``kb.sqlite3-wal``,
and a *checkpoint* copies them back into ``kb.sqlite3`` (and fsyncs it). SQLite's
default runs one inside the commit that leaves 1 000 pages or more in the log:
on a node that commit runs on the event loop, which then stalls for the copy and
the fsync (10 to 30 ms on a bench machine, every ~100 gossip batches; the slowest
samples of ``bench convergence`` were those). A writer here turns that off
(``PRAGMA wal_autocheckpoint = 0``) and :class:`Checkpointer` runs PASSIVE
checkpoints instead, on a connection and a thread of its own: SQLite runs a
checkpoint beside the writer and readers, and the thread waits on SQLite with
the GIL released.

* **When**: after a commit, the writer looks at the size of the ``-wal`` (one
  ``stat``). Past :data:`WAL_SIZE_LIMIT` (the size a completed checkpoint lets
  the next write truncate the file to, ``journal_size_limit``) it wakes the
  thread; the log restarts and shrinks once a checkpoint has copied all of it.
* **A bound**: were the thread never to catch up (writes that never pause),
  past :data:`WAL_HARD_LIMIT` the writer runs the checkpoint itself, in the
  commit, as SQLite's default would. No checkpoint can copy frames a reader's
  snapshot still needs: while a reader holds an old snapshot the log grows,
  with this as with SQLite's default (checkpoints then count as ``incomplete``).
* **Durability** does not change: a commit is durable in the log (synchronous
  FULL fsyncs it); a checkpoint only copies committed pages.
* :meth:`Checkpointer.close` waits for a checkpoint under way and closes the
  thread's connection, so the writer, closed next, is the last connection and
  SQLite removes the ``-wal`` (a clean stop leaves none).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from gossipmind.store import sqlfile

log = logging.getLogger(__name__)

# What the -wal keeps once a checkpoint has copied it all back: a write that starts
# the log again truncates it to this size. Above the steady-state size (the
# autocheckpoint at 1 000 pages of 4 KiB, plus the batch that crossed it: 4-6 MiB),
# so steady writes never truncate and regrow it; below what a large catch-up leaves
# (33 MiB), which no longer stays until a clean stop.
WAL_SIZE_LIMIT = 8 * 1024 * 1024
WAL_HARD_LIMIT = 4 * WAL_SIZE_LIMIT  # past this the writer checkpoints in its commit


@dataclass(slots=True)
class CheckpointStats:
    """What the checkpoints of one store did since it was opened."""

    background: int = 0  # checkpoints the thread ran
    inline: int = 0  # checkpoints the writer ran in a commit (the log past the hard limit)
    # of those, ones that left frames in the log: written meanwhile (the thread's run
    # beside the writer), still needed by a reader's snapshot, or busy
    incomplete: int = 0
    failed: int = 0
    last_error: str = ""


class Checkpointer:
    """The checkpoints of one writer connection (see the module docstring). The
    thread starts at the first checkpoint it is asked for: a short-lived writer
    (a CLI command) never starts one."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wal = path.with_name(path.name + "-wal")
        self.stats = CheckpointStats()
        self._cond = threading.Condition()
        self._wanted = False  # a checkpoint was asked for and has not started
        self._busy = False  # a checkpoint runs
        self._closing = False
        self._thread: threading.Thread | None = None
        self._stats_lock = threading.Lock()  # the writer and the thread both count

    @staticmethod
    def configure(writer: sqlite3.Connection) -> None:
        """The writer's settings: no checkpoint in its commits, the log's size bound."""
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")

    def committed(self, writer: sqlite3.Connection) -> None:
        """Call after each commit of ``writer``: wakes the thread, or past the hard
        limit checkpoints on ``writer`` now. Never raises: a checkpoint that fails
        loses nothing (the pages stay in the log), and is counted and logged."""
        try:
            size = os.stat(self._wal).st_size
        except OSError:
            return  # no log (or it cannot be read): nothing to copy that we can see
        if size > WAL_HARD_LIMIT:
            self._checkpoint(writer, "in a commit")
        elif size > WAL_SIZE_LIMIT:
            self._want()

    def _want(self) -> None:
        with self._cond:
            if self._closing:
                return
            if self._thread is None:
                thread = threading.Thread(
                    target=self._run, name=f"gossipmind-checkpoint {self._path.name}", daemon=True
                )
                try:
                    thread.start()
                except RuntimeError as exc:  # "can't start new thread": the hard limit
                    self._failed("starting its thread", exc)  # still bounds the log
                    return
                self._thread = thread
            self._wanted = True
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Until no checkpoint is asked for or under way (True), or ``timeout`` s."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._wanted or self._busy), timeout)

    def close(self) -> None:
        """Stop the thread, after the checkpoint under way if any."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._wanted or self._closing)
                    if self._closing:
                        return
                    self._wanted, self._busy = False, True
                try:
                    if conn is None:
                        conn = sqlfile.connect(self._path, readonly=False)
                        conn.execute("PRAGMA synchronous = FULL")  # fsync what it copies
                    self._checkpoint(conn, "in the background")
                except Exception as exc:  # noqa: BLE001 - e.g. the connection: the next try
                    self._failed("in the background", exc)
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        finally:
            if conn is not None:
                conn.close()

    def _checkpoint(self, conn: sqlite3.Connection, where: str) -> None:
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            self._failed(where, exc)
            return
        # (busy, frames in the log, frames copied): all copied, or some left
        complete = row is not None and row[0] == 0 and row[1] == row[2]
        with self._stats_lock:
            if where == "in a commit":
                self.stats.inline += 1
            else:
                self.stats.background += 1
            if not complete:
                self.stats.incomplete += 1

    def _failed(self, where: str, exc: BaseException) -> None:
        with self._stats_lock:
            self.stats.failed += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("checkpoint of %s %s failed: %s", self._path, where, self.stats.last_error)
