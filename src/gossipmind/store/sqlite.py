"""The SQLite store: ops, heads, pending, rejected and materialised state (WAL).

A :class:`Store` owns one replica. Every batch of ops is applied to the replica
and persisted in one transaction; a caller may acknowledge an op once
:meth:`Store.ingest` returned. Reopening replays the ops table in application
order (a causal order) and reproduces the same replica and state root.

Files that are not gossipmind stores, that come from a newer version, or that
are corrupt are refused with a :class:`StoreError` and never modified.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from gossipmind.core import ops as opsmod
from gossipmind.core.errors import GossipmindError, InvalidOp, StoreError
from gossipmind.core.identity import Identity
from gossipmind.core.ops import Op
from gossipmind.core.records import CHUNK
from gossipmind.core.replica import IngestResult, Replica
from gossipmind.store import journal, readback, receipts, schema, sqlfile
from gossipmind.store.checkpoint import WAL_SIZE_LIMIT, Checkpointer
from gossipmind.store.rows import OpReads, fold_stamp, write_state
from gossipmind.store.sqlfile import StoreLocked, check_file
from gossipmind.store.verifier import Verification

MAX_REJECTED_ROWS = 100_000
RELEASE_EVERY = CHUNK  # replayed ops between two releases of the fold records' bytes
# Replayed ops between two voluntary releases of the GIL. A node opens its store on
# a worker thread (node/opening.py) while the event loop serves the process's other
# nodes, but the replay's row fetches release the GIL for microseconds only, too
# short for the loop's thread to take it: the loop waited up to 0.65 s at a time,
# ~2 s in all, while a 100 000-op store opened. A sleep(0) every 256 ops (~8 ms)
# lets it in: its longest wait ~85 ms (a full garbage collection), the replay's
# time unchanged within its spread.
YIELD_EVERY = 256
CREATE_WAIT_S = 0.0  # a creator never waits: whoever holds the lock is creating or writing

__all__ = ["MAX_REJECTED_ROWS", "WAL_SIZE_LIMIT", "Store", "StoreLocked", "check_file"]

Staged = tuple[list[Op], Verification, IngestResult]  # Store.stage: ops, their check, result


class Store(OpReads):
    """A replica persisted in SQLite. Not thread-safe: one writer task owns it."""

    def __init__(
        self, path: Path, conn: sqlite3.Connection, replica: Replica, lock_fd: int
    ) -> None:
        self.path = path
        self.conn = conn
        self.replica = replica
        self._lock_fd = lock_fd
        self._broken: str | None = None
        self._pending_rows: set[bytes] = set()  # ids in the pending table
        self.checkpoints = Checkpointer(path)  # off the writer's commits (store.checkpoint)
        # the fold keeps the bytes of ops not yet durable only (core/records.py)
        replica.fold.records.loader = self._raws_of

    # -- lifecycle --------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, genesis: Op, *, synchronous: str = "FULL") -> Store:
        """Create a new store for the network whose genesis is ``genesis``.

        The store's lock is taken first. A complete store (schema, metadata, the
        genesis op and the rows it gives) is built under a unique temporary name
        and then linked into place: of two concurrent creators one succeeds and
        the other is refused, and a kill at any step leaves no store or a
        complete one (:mod:`gossipmind.store.sqlfile`).
        """
        Replica(genesis)  # validates the genesis before anything touches the disk
        try:
            lock_fd = sqlfile.lock(path, wait=CREATE_WAIT_S)
        except StoreLocked:
            raise StoreLocked(
                f"{path.parent} is in use: another process holds the lock of {path.name} "
                "(it is creating or writing the store); nothing was created"
            ) from None
        try:
            sqlfile.check_new(path)
            sqlfile.remove_leftovers(path)
            try:
                tmp = sqlfile.new_file(path, lambda conn: sqlfile.first_rows(conn, genesis))
                try:
                    cls._open(tmp, -1, synchronous).close()  # writes the materialised rows
                    sqlfile.publish(tmp, path)
                finally:
                    sqlfile.discard(tmp)
            except StoreError as exc:
                raise StoreError(f"cannot create {path}: {exc}") from exc
            except (sqlite3.Error, OSError) as exc:
                raise sqlfile.create_error(path, exc) from exc
        except BaseException:
            os.close(lock_fd)
            raise
        return cls._open(path, lock_fd, synchronous)

    @classmethod
    def open(cls, path: Path, *, synchronous: str = "FULL", wait: float = 0.0) -> Store:
        """Open an existing store read-write and rebuild its replica.

        ``wait``: how many seconds to wait for another process's lock (a writing
        command waits for another one; the node does not wait)."""
        check_file(path)  # a file that is not a store we can read is refused first
        lock_fd = sqlfile.lock(path, wait=wait)
        store = cls._open(path, lock_fd, synchronous)
        sqlfile.remove_leftovers(path)  # of a creation killed after it published
        return store

    @classmethod
    def _open(cls, path: Path, lock_fd: int, synchronous: str) -> Store:
        """Open ``path`` read-write; ``lock_fd`` (its lock, or -1) is closed on failure."""
        conn: sqlite3.Connection | None = None
        store: Store | None = None
        try:
            conn = sqlfile.connect(path, readonly=False)
            version, _ = sqlfile.read_header(conn, path)
            conn.execute("PRAGMA journal_mode = WAL")
            Checkpointer.configure(conn)
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            with transaction(conn):
                if version < schema.SCHEMA_VERSION:
                    schema.migrate(conn, version)
                receipts.ensure(conn)  # (additive: an older gossipmind ignores it)
                journal.ensure(conn)  # (additive too)
            genesis = opsmod.decode(sqlfile.meta(conn, "genesis", path))
            store = cls(path, conn, Replica(genesis), lock_fd)
            store._replay()
            store._restore_genesis()
        except BaseException as exc:
            if store is not None:  # its thread, if a commit of the replay started it
                store.checkpoints.close()
            if conn is not None:
                conn.close()
            if lock_fd >= 0:
                os.close(lock_fd)
            if isinstance(exc, sqlite3.DatabaseError):
                raise sqlfile.store_error(path, exc, "open") from exc
            if isinstance(exc, InvalidOp):
                raise StoreError(
                    f"{path} holds an invalid op ({exc}); run `gossipmind doctor`"
                ) from exc
            raise
        return store

    def close(self) -> None:
        try:
            self.checkpoints.close()  # first: the writer must be the last connection
        finally:
            try:
                self.conn.close()
            finally:
                if self._lock_fd >= 0:
                    os.close(self._lock_fd)
                    self._lock_fd = -1

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _replay(self) -> None:
        r = self.replica
        cur = self.conn.execute("SELECT raw FROM ops ORDER BY ord")
        with r.batch():  # one membership recomputation for the whole replay
            for n, (raw,) in enumerate(cur, 1):
                if n % RELEASE_EVERY == 0:  # all durable: the fold need not hold them
                    r.fold.records.release()
                if n % YIELD_EVERY == 0:
                    time.sleep(0)  # see YIELD_EVERY
                op = opsmod.decode(self._blob(raw, "an op in table ops"))
                if op.id == r.net:
                    continue
                result = r.ingest(op, verified=True)
                if not result.applied or result.applied[0].id != op.id:
                    code = result.rejected[0][1] if result.rejected else "not applied"
                    raise InvalidOp("replay", f"op {op.short()} did not re-apply: {code}")
        r.fold.records.release()
        for id_, code, detail in self.conn.execute("SELECT id, code, detail FROM rejected"):
            r.rejected[self._blob(id_, "an id in table rejected")] = (str(code), str(detail))
        pending = [
            opsmod.decode(self._blob(raw, "an op in table pending"))
            for (raw,) in self.conn.execute("SELECT raw FROM pending")
        ]
        self._pending_rows = {op.id for op in pending}
        applied = IngestResult()
        for op in pending:
            applied.extend(r.ingest(op, verified=True))
        if applied.applied:  # pending ops whose deps were stored after them (crash window)
            self._persist(applied)
        r.fold.drain_dirty()
        self._refresh_rows()

    def _refresh_rows(self) -> None:
        """Rewrite every materialised row unless this code's rules wrote them over
        the ops the store holds (:func:`~gossipmind.store.rows.fold_stamp`).

        A store written before :data:`FOLD_VERSION` (or by none: a new store), or
        to which an older release added ops after a rollback, holds rows these
        rules may compute differently; ops are untouched.
        """
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'fold'").fetchone()
        if row is not None and row[0] == fold_stamp(self.replica):  # a damaged (non-bytes) stamp
            return  # is a mismatch: the rows are written again
        self.replica.fold.all_dirty = True
        with self._tx():
            write_state(self.conn, self.replica, True)  # stamps the rows

    def _blob(self, value: object, what: str) -> bytes:
        return readback.blob(self.path, value, what)

    def _restore_genesis(self) -> None:
        """Write the genesis op's row if the ops table lacks it: a store that a
        release before the crash-safe :meth:`create` published and was killed
        before it wrote the genesis. The genesis goes first (``ord`` 1), before
        any op stored since, and the heads are written again."""
        g = self.replica.genesis
        if self.conn.execute("SELECT 1 FROM ops WHERE id = ?", (g.id,)).fetchone():
            return
        with self._tx():
            self.conn.execute("UPDATE ops SET ord = -ord")  # two steps: ord is unique
            self.conn.execute("UPDATE ops SET ord = 1 - ord")
            self.conn.execute(
                "INSERT INTO ops (ord, id, raw, author, seq, lamport, kind, ts) "
                "VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                (g.id, g.raw, g.author, g.seq, g.lamport, g.kind, g.ts),
            )
            self.conn.execute("DELETE FROM heads")
            self.conn.executemany(
                "INSERT INTO heads VALUES (?)", [(h,) for h in self.replica.heads]
            )

    # -- writing ------------------------------------------------------------------

    def ingest(self, ops: Iterable[Op], *, verified: bool = False) -> IngestResult:
        """Apply and persist a batch of decoded ops in one transaction.

        Signatures of ops not seen before are verified in parallel threads
        (PyNaCl releases the GIL) unless ``verified`` says it was done already.
        Once this returns, every applied op is durable: it may be acknowledged.
        """
        self._check_usable()
        fresh, dups = self._fresh(ops)
        check = None if verified else Verification(fresh)
        return self._apply(fresh, check, IngestResult(duplicates=dups))

    def ingest_raw(self, raws: Iterable[bytes]) -> IngestResult:
        """Decode, apply and persist a batch of raw ops (undecodable ones are rejected)."""
        return next(self.ingest_stream([raws]))

    def ingest_stream(self, batches: Iterable[Iterable[bytes]]) -> Iterator[IngestResult]:
        """Ingest batches of raw ops as a pipeline: while one batch is applied and
        committed, the signatures of the next are verified on the other cores.

        Yields one result per batch, after that batch is durable.
        """
        self._check_usable()
        it = iter(batches)
        staged = self.stage(next(it, None))
        while staged is not None:
            current = staged
            staged = self.stage(next(it, None))  # start verifying the next batch
            yield self.apply_staged(current)

    def stage(self, raws: Iterable[bytes] | None) -> Staged | None:
        """Decode a batch of raw ops and start verifying the signatures of those
        not known here, on other threads; :meth:`apply_staged` applies it. An
        async caller can wait for ``staged[1]`` without blocking its loop
        (``Verification.ready``). None for None."""
        if raws is None:
            return None
        decoded: list[Op] = []
        result = IngestResult()
        for raw in raws:
            try:
                decoded.append(opsmod.decode(raw))
            except InvalidOp as exc:
                oid = opsmod.op_id(bytes(raw))
                if not self.replica.known(oid):
                    result.rejected.append((oid, exc.code, exc.detail))
        fresh, result.duplicates = self._fresh(decoded)
        return fresh, Verification(fresh), result

    def apply_staged(self, staged: Staged) -> IngestResult:
        """Apply and persist a batch :meth:`stage` made (waiting for its signatures).
        Ops that became known meanwhile (gossip, a write) count as duplicates."""
        self._check_usable()
        return self._apply(*staged)

    def _fresh(self, ops: Iterable[Op]) -> tuple[list[Op], int]:
        """Drop ops already known (never verify an op twice)."""
        known = self.replica.known
        fresh: list[Op] = []
        seen: set[bytes] = set()
        dups = 0
        for op in ops:
            if known(op.id) or op.id in seen:
                dups += 1
            else:
                seen.add(op.id)
                fresh.append(op)
        return fresh, dups

    def _apply(
        self, fresh: list[Op], check: Verification | None, result: IngestResult
    ) -> IngestResult:
        r = self.replica
        for oid, code, detail in result.rejected:
            r.rejected.setdefault(oid, (code, detail))
        good = check.result() if check is not None else [True] * len(fresh)
        before = len(r.meta)
        try:
            with r.batch():  # one membership recomputation per batch, not per revoke
                for op, ok in zip(fresh, good, strict=True):
                    if ok:
                        result.extend(r.ingest(op, verified=True))
                    else:
                        result.extend(r.reject(op, "signature", "the signature does not verify"))
        except Exception as exc:
            if len(r.meta) != before:  # applied in memory, not written (e.g. the rebuild at
                self._fail_group(exc)  # the batch's end could not read ops back): unusable
            raise
        self._persist(result)
        return result

    def create_op(self, identity: Identity, kind: str, body: dict[str, Any], ts: int) -> Op:
        """Author, apply and persist one op; raise the error (changing nothing) if refused."""
        (out,) = self.create_ops(identity, [(kind, body, ts)])
        if isinstance(out, GossipmindError):
            raise out
        return out

    def create_ops(
        self,
        identity: Identity,
        requests: Sequence[tuple[str, dict[str, Any], int]],
        report_ids: Sequence[Iterable[bytes]] = (),
        journaled: Sequence[Iterable[bytes]] = (),
    ) -> list[Op | GossipmindError]:
        """Author and apply ops in order, then persist them in one transaction (a
        group commit: one commit, not one per op).

        Each ``(kind, body, ts)`` gives its Op, or the error that refused it (an
        InvalidOp, or e.g. an EncodingError for a body that cannot be encoded) —
        a refused request changes nothing and does not affect the others. When
        this returns, every Op in the result is durable. Anything else that
        escapes once the replica has changed marks the store broken (the replica
        would hold ops the file does not) and raises StoreError. ``report_ids``
        (per request, if given) are the SDK's ids of the reports a request's op
        carries: recorded in the same transaction as the op (store/receipts.py);
        ``journaled`` the ids of their journal rows, deleted there (store/journal.py).
        """
        self._check_usable()
        out: list[Op | GossipmindError] = []
        meta = self.replica.meta
        start = len(meta)
        for kind, body, ts in requests:
            before = len(meta)
            try:
                out.append(self.replica.create(identity, kind, body, ts))
            except GossipmindError as exc:
                if len(meta) != before:  # applied, then failed: memory is not trustworthy
                    self._fail_group(exc)
                out.append(exc)  # refused before anything was applied: this request alone
            except Exception as exc:
                if len(meta) == start:  # nothing applied: nothing diverged
                    raise
                self._fail_group(exc)
        applied = [op for op in out if isinstance(op, Op)]
        ids = [i for o, rs in zip(out, report_ids, strict=False) if isinstance(o, Op) for i in rs]
        rows = [i for o, rs in zip(out, journaled, strict=False) if isinstance(o, Op) for i in rs]
        if applied:
            self._persist(IngestResult(applied=applied), (ids, rows))
        return out

    def _fail_group(self, exc: BaseException) -> NoReturn:
        """A write failed after ops were applied in memory: the store is unusable."""
        self._broken = f"{type(exc).__name__}: {exc}"
        raise StoreError(f"write to {self.path} failed: {self._broken}") from exc

    @property
    def broken(self) -> str | None:
        """Why the store is unusable (a write failed: reopen it), or None."""
        return self._broken

    def _check_usable(self) -> None:
        if self._broken:
            raise StoreError(f"store is unusable after a failed write ({self._broken}); reopen it")

    def _persist(
        self, result: IngestResult, done: journal.Done = ((), ()), *, full: bool = False
    ) -> None:
        try:
            with self._tx():
                self._write(result, full)
                receipts.record(self.conn, done[0])  # the report ids the ops carry,
                journal.delete(self.conn, done[1])  # and their journal rows (not both)
        except sqlite3.Error as exc:
            self._broken = str(exc)
            raise StoreError(f"write to {self.path} failed: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - a value SQLite cannot hold, or a bug: the replica
            self._fail_group(exc)  # applied ops the file does not have
        self.replica.fold.records.release()  # durable: read back from the file when needed

    def _raws_of(self, ids: list[bytes]) -> dict[bytes, bytes]:
        """The bytes of applied ops, by id (for the fold's records)."""
        try:
            return readback.raws_of(self.conn, self.path, ids)
        except sqlite3.Error as exc:
            raise sqlfile.store_error(self.path, exc, "read") from exc

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """A write transaction; after its commit, the checkpoints' turn."""
        with transaction(self.conn):
            yield
        self.checkpoints.committed(self.conn)

    def _write(self, result: IngestResult, full: bool) -> None:
        c = self.conn
        r = self.replica
        if result.applied:
            c.executemany(
                "INSERT OR IGNORE INTO ops (id, raw, author, seq, lamport, kind, ts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(o.id, o.raw, o.author, o.seq, o.lamport, o.kind, o.ts) for o in result.applied],
            )
            self._unpend(o.id for o in result.applied)
            # the heads change by what these ops cite and by these ops: rewriting
            # them all made each commit cost the number of heads, and an
            # equivocator makes one head per fork (3 000 forks: 9 ms an op)
            cited = {d for o in result.applied for d in o.deps}
            c.executemany("DELETE FROM heads WHERE id = ?", [(d,) for d in cited])
            c.executemany(
                "INSERT OR IGNORE INTO heads VALUES (?)",
                [(o.id,) for o in result.applied if o.id in r.heads],
            )
        if result.pending:
            rows = [(i, raw) for i in result.pending if (raw := self._pending_raw(i)) is not None]
            c.executemany("INSERT OR IGNORE INTO pending VALUES (?, ?)", rows)
            self._pending_rows.update(i for i, _ in rows)
        if result.evicted:
            self._unpend(result.evicted)
        if result.rejected:
            c.executemany(
                "INSERT OR IGNORE INTO rejected (id, code, detail) VALUES (?, ?, ?)",
                result.rejected,
            )
            self._unpend(i for i, _, _ in result.rejected)
            c.execute(
                "DELETE FROM rejected WHERE ord <= (SELECT MAX(ord) FROM rejected) - ?",
                (MAX_REJECTED_ROWS,),
            )
        write_state(self.conn, self.replica, full or bool(result.applied))

    def _unpend(self, ids: Iterable[bytes]) -> None:
        gone = [(i,) for i in ids if i in self._pending_rows]
        if gone:
            self.conn.executemany("DELETE FROM pending WHERE id = ?", gone)
            self._pending_rows.difference_update(i for (i,) in gone)

    def _pending_raw(self, op_id: bytes) -> bytes | None:
        return self.replica.pending.raw(op_id)

    # -- reading (for sync and the node) -----------------------------------------

    def knows_report(self, rid: bytes) -> bool:
        return receipts.known(self.conn, rid)

    def journal(self, add: Sequence[journal.Row] = (), drop: Sequence[bytes] = ()) -> None:
        """Journal the rows ``add`` and forget ``drop`` in one transaction (store/journal.py)."""
        self._check_usable()
        try:
            with self._tx():
                journal.add(self.conn, add)
                journal.delete(self.conn, drop)
        except sqlite3.Error as exc:
            raise sqlfile.store_error(self.path, exc, "write") from exc


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # SQLite rolls back by itself on some errors (SQLITE_FULL, SQLITE_IOERR):
        # a second ROLLBACK would replace the real error with "no transaction is
        # active". A COMMIT that failed may leave the transaction open.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
