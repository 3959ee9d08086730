"""The store file on disk: the single-writer lock, reading it without writing,
building a new one, and what an SQLite error says about it.

* **The lock** (``kb.sqlite3.lock``, ``flock``) is taken before anything is
  checked or written, by every writer and by every creator. A writer may wait
  for it a bounded time (a writing command waits for another command); the
  node does not wait.
* **Reading** a stopped store (no ``-wal`` beside it, or an empty one: the last
  writer checkpointed) is done ``immutable``, so that SQLite creates no ``-wal``
  or ``-shm`` file: the read works on a read-only filesystem or a full disk, and
  leaves nothing behind. If a writer starts meanwhile (the ``-wal`` grows, or
  the file changes), the read is done again as an ordinary WAL reader, which
  sees one consistent snapshot. A store with frames in its ``-wal`` (a writer
  runs, or was killed) is read as a WAL reader: SQLite then needs the ``-shm``
  index and creates it if it is missing, which takes a writable directory.
* **A new store** is written whole into a file of a unique temporary name
  (schema, metadata, the genesis op and its rows) and then linked into place
  (``os.link`` never replaces a file). A kill at any step leaves no store, or a
  complete one; a stray temporary file is removed by the next writer.
* **Errors**: only ``SQLITE_CORRUPT``, ``SQLITE_NOTADB`` and the like mean the
  file is damaged. I/O errors, a full disk, a read-only filesystem and missing
  permissions say so, with the likely cause, and never call the store corrupt.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gossipmind.core.errors import StoreError
from gossipmind.core.ops import Op
from gossipmind.store import schema
from gossipmind.store.datadir import fsync_path

T = TypeVar("T")
LOCK_POLL_S = 0.05  # how often a waiting writer tries the lock again
CREATING = ".creating."  # kb.sqlite3.creating.<random>: a store being built
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ENOSYS}

# Primary SQLite result codes that are about reaching the file, not its content.
_ACCESS = {
    sqlite3.SQLITE_PERM,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_NOLFS,
    sqlite3.SQLITE_AUTH,
}
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


class StoreLocked(StoreError):
    """Another process (a running node, or another command) holds the store for writing."""


# -- what an SQLite error means ---------------------------------------------------------


def _primary(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_access_error(exc: BaseException) -> bool:
    """Whether ``exc`` is about reaching the file (I/O, a full disk, a read-only
    filesystem, permissions), not about what the file holds."""
    return _primary(exc) in _ACCESS


def access_hint(path: Path) -> str:
    """The likely reason a file of ``path``'s directory cannot be read or written."""
    parent = path.parent
    try:
        st = os.statvfs(parent)
    except OSError:
        return "disk full, permissions or a read-only filesystem?"
    if st.f_flag & os.ST_RDONLY:
        return f"{parent} is on a read-only filesystem"
    free = (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize
    if free < 1024 * 1024:
        return f"the disk is full: {free} bytes free in {parent}"
    if not os.access(parent, os.W_OK):
        return f"no permission to write in {parent}"
    return "disk full, permissions or a read-only filesystem?"


def store_error(path: Path, exc: sqlite3.Error, doing: str = "read") -> StoreError:
    """The StoreError for an SQLite error met while ``doing`` something with ``path``."""
    primary = _primary(exc)
    if primary in _ACCESS:
        return StoreError(f"cannot {doing} {path}: {exc} ({access_hint(path)})")
    if primary in _BUSY:
        return StoreError(f"cannot {doing} {path}: {exc}; try again")
    return StoreError(f"{path} is corrupt or not an SQLite database: {exc}")


# -- reading ------------------------------------------------------------------------------


def connect(path: Path, *, readonly: bool, immutable: bool = False) -> sqlite3.Connection:
    if path.is_dir():  # SQLite would say "disk I/O error", which points at the disk
        raise StoreError(f"{path} is a directory, not a gossipmind store")
    query = "mode=ro&immutable=1" if immutable else ("mode=ro" if readonly else "mode=rw")
    uri = f"file:{urllib.parse.quote(os.fsencode(path))}?{query}"  # any path bytes
    try:
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        if is_access_error(exc):
            raise StoreError(f"cannot open {path}: {exc} ({access_hint(path)})") from exc
        raise StoreError(f"cannot open {path}: {exc}") from exc


def file_state(path: Path) -> tuple[int, int, int, int]:
    """What changes when a writer touches the store ``path``: the file's inode, size
    and mtime, and the size of its ``-wal`` (-1: none)."""
    st = path.stat()
    try:
        wal = path.with_name(path.name + "-wal").stat().st_size
    except FileNotFoundError:
        wal = -1
    return st.st_ino, st.st_size, st.st_mtime_ns, wal


def is_stopped(path: Path) -> bool:
    """Whether no writer has frames in the ``-wal`` of ``path`` (none, or an empty
    one: a writer checkpointed, or failed before it wrote): the file alone holds
    the store, and it can be read ``immutable``."""
    try:
        return path.with_name(path.name + "-wal").stat().st_size == 0
    except FileNotFoundError:
        return True


class ReadOnly:
    """A read-only connection to a store file that creates no ``-wal`` or ``-shm``
    beside a stopped store (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise StoreError(f"no store at {path}; run `gossipmind network create` or `join` first")
        self.path = path
        self._state = file_state(path)
        self.immutable = is_stopped(path)
        self.conn = connect(path, readonly=True, immutable=self.immutable)

    def close(self) -> None:
        self.conn.close()

    def changed(self) -> bool:
        """Whether a writer may have changed the file under the immutable connection."""
        if not self.immutable:
            return False
        try:
            return file_state(self.path) != self._state or not is_stopped(self.path)
        except OSError:
            return True

    def run(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """``read(conn)``; again as an ordinary WAL reader if a writer changed the file
        meanwhile. An SQLite error is a :class:`StoreError` that names its cause."""
        if self.immutable:
            try:
                out = read(self.conn)
            except sqlite3.DatabaseError as exc:
                if not self.changed():
                    raise store_error(self.path, exc) from exc
            else:
                if not self.changed():
                    return out
            self.conn.close()
            self.immutable = False
            self.conn = connect(self.path, readonly=True)
        try:
            return read(self.conn)
        except sqlite3.DatabaseError as exc:
            raise store_error(self.path, exc) from exc


def read_header(conn: sqlite3.Connection, path: Path) -> tuple[int, bytes]:
    """(schema version, network id) of the store ``conn`` reads; StoreError unless
    it is a gossipmind store this code can read."""
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app != schema.APPLICATION_ID:
        raise StoreError(f"{path} is not a gossipmind store (application id {app:#x})")
    if version > schema.SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, newer than this gossipmind "
            f"supports ({schema.SCHEMA_VERSION}); upgrade gossipmind"
        )
    if version < 1:
        raise StoreError(
            f"{path} has schema version {version}, which gossipmind never writes: "
            "its header is damaged; run `gossipmind doctor`"
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'net'").fetchone()
    if row is None:
        raise StoreError(f"{path} has no network id: not a complete gossipmind store")
    if not isinstance(row[0], bytes):
        raise StoreError(
            f"{path}: its network id is damaged (a {type(row[0]).__name__}, not bytes); "
            "run `gossipmind doctor`"
        )
    return version, row[0]


def check_file(path: Path) -> tuple[int, bytes]:
    """Check, read-only, that ``path`` is a gossipmind store we can read.

    Returns (schema version, network id). Never modifies the file, and creates
    nothing beside a stopped store.
    """
    db = ReadOnly(path)
    try:
        return db.run(lambda conn: read_header(conn, path))
    finally:
        db.close()


# -- the lock -------------------------------------------------------------------------------


def flock_within(fd: int, wait: float) -> bool:
    """Take an exclusive ``flock`` on ``fd``, trying again every ``LOCK_POLL_S`` for
    up to ``wait`` s (bounded in count and in time); False if another process
    still holds it. Other ``OSError`` (a filesystem without locks) propagate."""
    deadline = time.monotonic() + wait
    for _ in range(int(wait / LOCK_POLL_S) + 2):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(LOCK_POLL_S)
        else:
            return True
    return False


def lock(path: Path, *, wait: float = 0.0) -> int:
    """Take the single-writer lock of the store ``path`` (released when the fd is
    closed or the process exits), trying again every 50 ms for up to ``wait``
    seconds. :class:`StoreLocked` if another process still holds it."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError as exc:
        raise StoreError(f"cannot lock {path}: no directory {path.parent}") from exc
    except OSError as exc:
        raise StoreError(
            f"cannot lock {path}: {lock_path}: {exc.strerror} ({access_hint(path)})"
        ) from exc
    if flock_within(fd, wait):
        return fd
    os.close(fd)
    waited = f" (waited {wait:g} s)" if wait > 0 else ""
    raise StoreLocked(
        f"{path} is open for writing by another process{waited}: a running node, or "
        "another gossipmind command; stop it, or write through the node's API"
    )


# -- a new store ----------------------------------------------------------------------------


def leftovers(path: Path) -> list[Path]:
    """Temporary files of creations of ``path`` that were interrupted (a kill):
    only valid while the caller holds the lock (no creation is under way)."""
    return sorted(path.parent.glob(f"{path.name}{CREATING}*"))


def remove_leftovers(path: Path) -> None:
    for stray in leftovers(path):
        with contextlib.suppress(OSError):
            stray.unlink()


def check_new(path: Path) -> None:
    """Before ``path`` is created (the caller holds the lock): refuse an existing
    store, and a non-empty ``-wal`` or ``-journal`` left by a removed one (SQLite
    would replay it into the new file, which it does not belong to); remove an
    empty one and a ``-shm`` (they hold nothing)."""
    if path.exists():
        raise StoreError(f"{path} already exists")
    for suffix in ("-wal", "-journal"):
        orphan = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            if orphan.stat().st_size > 0:
                raise StoreError(
                    f"{orphan} is left from a store that is gone (there is no {path}): "
                    "SQLite would replay it into the new store. If you removed "
                    f"{path.name} by mistake, put it back; otherwise delete {orphan} "
                    f"and {path.name}-shm. Nothing was created"
                )
    for suffix in ("-wal", "-journal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def new_file(path: Path, build: Callable[[sqlite3.Connection], None]) -> Path:
    """An empty SQLite file under a unique temporary name beside ``path``, in which
    ``build(conn)`` ran in one transaction after the schema was created."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + CREATING)
    os.close(fd)
    tmp = Path(name)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript("BEGIN;\n" + schema.DDL)  # leaves the transaction open
            schema.stamp(conn)
            build(conn)
            conn.execute("COMMIT")
        finally:
            conn.close()
    except BaseException:
        discard(tmp)
        raise
    return tmp


def publish(tmp: Path, path: Path) -> None:
    """Give the complete store ``tmp`` the name ``path``: never over an existing file."""
    fsync_path(tmp)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise StoreError(f"{path} already exists") from None
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
        if path.exists():  # a filesystem without hard links: the lock still makes
            raise StoreError(f"{path} already exists") from None  # creators exclusive
        os.rename(tmp, path)
    discard(tmp)
    fsync_path(path.parent)


def discard(tmp: Path) -> None:
    for p in (tmp, *(tmp.with_name(tmp.name + s) for s in ("-journal", "-wal", "-shm"))):
        with contextlib.suppress(OSError):
            p.unlink()


def create_error(path: Path, exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    what = f"{exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
    if isinstance(exc, OSError) or is_access_error(exc):
        return StoreError(f"cannot create {path}: {what} ({access_hint(path)})")
    return StoreError(f"cannot create {path}: {what}")


def first_rows(conn: sqlite3.Connection, genesis: Op) -> None:
    """The metadata and the genesis op of a new store (its other rows are written
    at its first open, which finds no fold stamp)."""
    conn.execute("INSERT INTO meta VALUES ('net', ?)", (genesis.id,))
    conn.execute("INSERT INTO meta VALUES ('genesis', ?)", (genesis.raw,))
    conn.execute("INSERT INTO meta VALUES ('app', 'gossipmind')")
    g = genesis
    conn.execute(
        "INSERT INTO ops (id, raw, author, seq, lamport, kind, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (g.id, g.raw, g.author, g.seq, g.lamport, g.kind, g.ts),
    )
    conn.execute("INSERT INTO heads VALUES (?)", (g.id,))


def meta(conn: sqlite3.Connection, key: str, path: Path) -> bytes:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise StoreError(f"{path}: store metadata {key!r} is missing; run `gossipmind doctor`")
    if not isinstance(row[0], bytes):
        raise StoreError(
            f"{path}: store metadata {key!r} is damaged (a {type(row[0]).__name__}, "
            "not bytes); run `gossipmind doctor`"
        )
    return row[0]
