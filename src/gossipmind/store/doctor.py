"""Check a data dir without changing it: `gossipmind doctor`.

Everything is read through a read-only SQLite connection (``mode=ro`` and
``query_only``) inside one read transaction, so the checks see one consistent
snapshot and work while a node is writing (WAL readers never block the
writer). Checks, each reported as its own finding:

* SQLite ``PRAGMA integrity_check`` and the store header (application id,
  schema version, network id);
* every stored op: it decodes canonically, its id column is the BLAKE2b of its
  bytes, its other columns match, its signature verifies, it belongs to the
  network, its deps are stored before it (the ``ord`` order is a causal order)
  and it is valid when re-applied in that order to a fresh replica;
* the fold recomputed from the ops equals the materialised tables (patterns,
  fixes, members, goals, equivocations, heads) and the state root;
* pending and rejected rows (counts, reasons, and that no op is in two states);
* file permissions: the identity key and the API token must be 0600.

A healthy data dir gives no finding of severity ``error``. A cell of the wrong
type is a finding, never a crash (:mod:`gossipmind.store.doctor_checks`). A store
that cannot be read for want of space, permissions or a writable filesystem is
the finding ``store.open`` (exit status 1: nothing was checked), not damage.
"""

from __future__ import annotations

import sqlite3
import stat
import sys
from pathlib import Path

from gossipmind.core.errors import ConfigError, StoreError
from gossipmind.store import schema, sqlfile
from gossipmind.store.datadir import DataDir, load_genesis, named_network
from gossipmind.store.diagnosis import (
    ERROR,
    EXIT_CORRUPT,
    EXIT_NOT_A_STORE,
    EXIT_NOT_FOUND,
    EXIT_UNREADABLE,
    EXIT_UNSAFE,
    INFO,
    MAX_LINES_PER_CHECK,
    NO_DATA_DIR,
    NOT_A_STORE,
    UNREADABLE,
    WARNING,
    Diagnosis,
    Finding,
)
from gossipmind.store.doctor_checks import CHUNK, StoreCheck

__all__ = [
    "CHUNK",
    "ERROR",
    "EXIT_CORRUPT",
    "EXIT_NOT_A_STORE",
    "EXIT_NOT_FOUND",
    "EXIT_UNREADABLE",
    "EXIT_UNSAFE",
    "INFO",
    "MAX_LINES_PER_CHECK",
    "WARNING",
    "Diagnosis",
    "Finding",
    "diagnose",
]


def diagnose(data_dir: DataDir | Path, *, signatures: bool = True) -> Diagnosis:
    """Check ``data_dir`` (a data dir, or a store file) and return the findings."""
    if isinstance(data_dir, Path) and data_dir.is_file():
        d, store_path = DataDir(data_dir.parent), data_dir
    else:
        d = data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir)
        store_path = d.store
    diag = Diagnosis(d.root)
    if not d.root.is_dir():
        diag.error(NO_DATA_DIR, f"no data directory at {d.root}")
        return diag
    if store_path != d.store and not _is_store_file(store_path):  # a file named by hand
        diag.error(
            NOT_A_STORE,
            f"{store_path} is not a gossipmind store (no SQLite header with gossipmind's "
            "application id): name a data dir or its kb.sqlite3",
        )
        return diag
    _check_permissions(d, diag)
    net = _check_store(store_path, diag, signatures)
    if net is not None and d.genesis.exists():
        try:
            genesis = load_genesis(d.genesis)
        except ConfigError as exc:
            if named_network(d.genesis) not in (None, net.hex()):  # the node refuses to start
                diag.error("genesis.file", f"{d.genesis} is for another network ({exc})")
            else:  # the node writes it again from the store at its next start
                diag.add(WARNING, "genesis.file", f"{exc}; a node rewrites it from the store")
        else:
            if genesis.id != net:
                diag.error("genesis.file", f"{d.genesis} is for another network", genesis.id)
    return diag


def _is_store_file(path: Path) -> bool:
    """Whether ``path`` may be a gossipmind store: SQLite's magic, and gossipmind's
    application id in the header (offset 68), or a header cut short before it (a
    truncated copy of a store is damage, not a wrong file: the store checks say
    so). A whole SQLite header with another application id is another database.
    Read-only."""
    try:
        with path.open("rb") as f:
            head = f.read(72)
    except OSError:
        return True  # let the store checks say why it cannot be read
    if not head.startswith(b"SQLite format 3\x00"):
        return False
    return len(head) < 72 or int.from_bytes(head[68:72], "big") == schema.APPLICATION_ID


# -- permissions ----------------------------------------------------------------------


def _check_permissions(d: DataDir, diag: Diagnosis) -> None:
    mode = stat.S_IMODE(d.root.stat().st_mode)
    if mode & 0o022:
        diag.add(
            WARNING,
            "perm.datadir",
            f"{d.root} has mode {mode:04o}: others can replace its files (chmod 700 {d.root})",
        )
    for check, path, what in (
        ("perm.key", d.key, "identity key"),
        ("perm.token", d.token, "API token"),
    ):
        try:
            st = path.lstat()
        except FileNotFoundError:
            if check == "perm.key":
                diag.add(WARNING, check, f"no {what} at {path}")
            continue
        if stat.S_ISLNK(st.st_mode):
            diag.add(WARNING, check, f"the {what} {path} is a symbolic link")
            try:
                st = path.stat()
            except OSError as exc:
                diag.error(check, f"the {what} {path} cannot be read: {exc.strerror}")
                continue
        if not stat.S_ISREG(st.st_mode):
            diag.error(check, f"the {what} {path} is not a regular file")
            continue
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            diag.error(
                check,
                f"the {what} {path} has mode {mode:04o}; it must be 0600 (chmod 600 {path})",
            )


# -- the store ------------------------------------------------------------------------


def _check_store(path: Path, diag: Diagnosis, signatures: bool) -> bytes | None:
    """Run every store check; return the network id if the header could be read.

    A stopped store (no ``-wal`` file, or an empty one: the last writer
    checkpointed) is read ``immutable``, so that SQLite creates no
    ``-wal``/``-shm`` file beside it. If the file changed meanwhile (a node
    started), the check runs again as an ordinary WAL reader, which sees one
    consistent snapshot.
    """
    if path.is_dir():  # as `status` and the node say
        diag.error("store.missing", f"{path} is a directory, not a gossipmind store")
        return None
    if not path.is_file():
        diag.error("store.missing", f"no store at {path}")
        return None
    if _wal_cut(path, diag):  # opening it would let SQLite's recovery rewrite the -shm
        return None  # (and the next doctor say healthy): the evidence stays as found
    modes = (True, False) if sqlfile.is_stopped(path) else (False,)
    for immutable in modes:
        before = sqlfile.file_state(path)
        sub = Diagnosis(diag.data_dir)
        sub.stats["store_bytes"] = before[1]
        sub.stats["wal_bytes"] = max(before[3], 0)
        net = _check_snapshot(path, sub, signatures, immutable=immutable)
        if not immutable or (sqlfile.file_state(path) == before and sqlfile.is_stopped(path)):
            break
    diag.merge(sub)
    return net


WAL_HEADER, FRAME_HEADER, SHM_HEADER = 32, 24, 48  # bytes (sqlite.org/fileformat.html)


def _wal_cut(path: Path, diag: Diagnosis) -> bool:
    """Whether the ``-wal`` was cut short (a truncated copy of a killed node's data
    dir, a damaged disk): its index in the ``-shm`` counts more committed frames
    than the file holds. SQLite would read the store as of the last whole frame,
    silently, and rebuild the index to match."""
    try:
        shm = Path(f"{path}-shm").read_bytes()[: 2 * SHM_HEADER]
        with Path(f"{path}-wal").open("rb") as f:
            # the size first: a running writer that restarts the log writes its new
            # header (new salt) before it truncates the file (journal_size_limit)
            size = f.seek(0, 2)
            f.seek(0)
            head = f.read(WAL_HEADER)
    except OSError:
        return False  # no -shm or no -wal: nothing to compare
    first, second = shm[:SHM_HEADER], shm[SHM_HEADER:]
    if len(shm) < 2 * SHM_HEADER or first != second or not first[12]:
        return False  # no index, one being written (the copies differ), or not initialised
    order = sys.byteorder  # the -shm is in the host's native byte order
    page, committed = int.from_bytes(first[14:16], order), int.from_bytes(first[16:20], order)
    page = 65536 if page == 1 else page  # (sqlite.org: a page size of 65536 is stored as 1)
    if committed == 0 or (len(head) == WAL_HEADER and head[16:24] != first[32:40]):
        return False  # an empty log, or a log restarted since (its salt changed): not cut
    frames = max(size - WAL_HEADER, 0) // (page + FRAME_HEADER) if page else 0
    if frames >= committed:
        return False
    diag.error(
        "wal.truncated",
        f"{path}-wal holds {frames} whole frames, but its index ({path}-shm) says "
        f"{committed} were committed: the log was cut short (a truncated copy, a "
        "damaged disk) and the transactions after it are lost from this store; "
        "restore a backup or let the node re-sync (operations.md §9). Nothing else "
        "was checked",
    )
    return True


def _check_snapshot(
    path: Path, diag: Diagnosis, signatures: bool, *, immutable: bool
) -> bytes | None:
    try:
        conn = sqlfile.connect(path, readonly=True, immutable=immutable)
    except StoreError as exc:
        diag.error(UNREADABLE, f"{exc}: the store could not be checked")
        return None
    try:
        conn.execute("PRAGMA query_only = 1")
        conn.execute("BEGIN")  # one snapshot for every check
        net = _header(conn, path, diag)
        if net is not None:
            _integrity(conn, diag)
            StoreCheck(conn, net, diag, signatures).run()
        return net
    except sqlite3.DatabaseError as exc:
        if sqlfile.is_access_error(exc):
            why = f"{exc} ({sqlfile.access_hint(path)})"
            diag.error(UNREADABLE, f"cannot read {path}: {why}: the store could not be checked")
        else:
            diag.error("sqlite", f"{path} cannot be read: {exc}")
        return None
    finally:
        conn.close()


def _header(conn: sqlite3.Connection, path: Path, diag: Diagnosis) -> bytes | None:
    """The checks of :func:`~gossipmind.store.sqlite.check_file`, on this connection."""
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app != schema.APPLICATION_ID:
        diag.error("store.header", f"{path} is not a gossipmind store (id {app:#x})")
        return None
    if version > schema.SCHEMA_VERSION:
        diag.error(
            "store.header",
            f"{path} has schema version {version}, newer than this gossipmind reads",
        )
        return None
    if version < 1:
        diag.error(
            "store.header",
            f"{path} has schema version {version}, which gossipmind never writes: the file "
            "header is damaged (the node and writing commands refuse the store)",
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'net'").fetchone()
    if row is None:
        diag.error("store.header", f"{path} has no network id")
        return None
    net = row[0]
    if not isinstance(net, bytes):
        diag.error("store.header", f"{path}: the network id is a {type(net).__name__}, not bytes")
        return None
    diag.stats.update(schema_version=version, network=net)
    return net


def _integrity(conn: sqlite3.Connection, diag: Diagnosis) -> None:
    rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(100)")]
    if rows != ["ok"]:
        for line in rows:
            diag.error("sqlite.integrity", line)
    diag.stats["integrity"] = "ok" if rows == ["ok"] else f"{len(rows)} problems"
