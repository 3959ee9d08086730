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

A healthy data dir gives no finding of severity ``error``.
"""

from __future__ import annotations

import sqlite3
import stat
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossipmind.core import encoding, snapshot
from gossipmind.core import ops as opsmod
from gossipmind.core.errors import ConfigError, EncodingError, InvalidOp
from gossipmind.core.ops import Op
from gossipmind.core.replica import Replica, state_root
from gossipmind.store import schema
from gossipmind.store.datadir import DataDir, load_genesis, named_network
from gossipmind.store.verifier import verify_all

ERROR, WARNING, INFO = "error", "warning", "info"
EXIT_CORRUPT = 5  # the store is damaged or inconsistent
EXIT_UNSAFE = 6  # only file permissions are wrong
MAX_LINES_PER_CHECK = 20
CHUNK = 2048  # ops decoded and verified together (bounded memory)


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | info
    check: str  # a stable name, e.g. "op.signature", "fold.fixes", "perm.key"
    message: str
    ref: bytes | None = None  # the op, pattern, fix, goal or key concerned


@dataclass
class Diagnosis:
    data_dir: Path
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    error_count: int = 0  # every error, listed or only counted
    _per_check: Counter[str] = field(default_factory=Counter)

    def add(self, severity: str, check: str, message: str, ref: bytes | None = None) -> None:
        """Record a finding; past MAX_LINES_PER_CHECK of one check, only count them."""
        self._per_check[check] += 1
        self.error_count += severity == ERROR
        if self._per_check[check] <= MAX_LINES_PER_CHECK:
            self.findings.append(Finding(severity, check, message, ref))
        elif self._per_check[check] == MAX_LINES_PER_CHECK + 1:
            self.findings.append(Finding(severity, check, f"more {check} problems (not listed)"))

    def error(self, check: str, message: str, ref: bytes | None = None) -> None:
        self.add(ERROR, check, message, ref)

    def count(self, check: str) -> int:
        return self._per_check[check]

    def merge(self, other: Diagnosis) -> None:
        self.findings += other.findings
        self.error_count += other.error_count
        self._per_check.update(other._per_check)
        self.stats.update(other.stats)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def healthy(self) -> bool:
        return not self.errors

    @property
    def exit_code(self) -> int:
        errors = self.errors
        if not errors:
            return 0
        if all(f.check.startswith("perm.") for f in errors):
            return EXIT_UNSAFE
        return EXIT_CORRUPT

    def to_doc(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "healthy": self.healthy,
            "exit_code": self.exit_code,
            "findings": [
                {"severity": f.severity, "check": f.check, "message": f.message, "ref": f.ref}
                for f in self.findings
            ],
            "errors": self.error_count,
            "problems": dict(sorted(self._per_check.items())),
            "stats": self.stats,
        }


def diagnose(data_dir: DataDir | Path, *, signatures: bool = True) -> Diagnosis:
    """Check ``data_dir`` (a data dir, or a store file) and return the findings."""
    if isinstance(data_dir, Path) and data_dir.is_file():
        d, store_path = DataDir(data_dir.parent), data_dir
    else:
        d = data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir)
        store_path = d.store
    diag = Diagnosis(d.root)
    if not d.root.is_dir():
        diag.error("datadir", f"no data directory at {d.root}")
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

    A stopped store (no ``-wal`` file: the last writer checkpointed and removed
    it) is read ``immutable``, so that SQLite creates no ``-wal``/``-shm`` file
    beside it. If the file changed meanwhile (a node started), the check runs
    again as an ordinary WAL reader, which sees one consistent snapshot.
    """
    if not path.is_file():
        diag.error("store.missing", f"no store at {path}")
        return None
    wal = path.with_name(path.name + "-wal")
    modes = (True, False) if not wal.exists() else (False,)
    for immutable in modes:
        before = _file_state(path)
        sub = Diagnosis(diag.data_dir)
        sub.stats["store_bytes"] = before[1]
        sub.stats["wal_bytes"] = wal.stat().st_size if wal.exists() else 0
        net = _check_snapshot(path, sub, signatures, immutable=immutable)
        if not immutable or (_file_state(path) == before and not wal.exists()):
            break
    diag.merge(sub)
    return net


def _file_state(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _check_snapshot(
    path: Path, diag: Diagnosis, signatures: bool, *, immutable: bool
) -> bytes | None:
    uri = (
        "file:"
        + urllib.parse.quote(str(path))
        + ("?mode=ro&immutable=1" if immutable else "?mode=ro")
    )
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        diag.error("store.open", f"cannot open {path}: {exc}")
        return None
    try:
        conn.execute("PRAGMA query_only = 1")
        conn.execute("BEGIN")  # one snapshot for every check
        net = _header(conn, path, diag)
        if net is not None:
            _integrity(conn, diag)
            _StoreCheck(conn, net, diag, signatures).run()
        return net
    except sqlite3.DatabaseError as exc:
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
    row = conn.execute("SELECT value FROM meta WHERE key = 'net'").fetchone()
    if row is None:
        diag.error("store.header", f"{path} has no network id")
        return None
    net = bytes(row[0])
    diag.stats.update(schema_version=version, network=net)
    return net


def _integrity(conn: sqlite3.Connection, diag: Diagnosis) -> None:
    rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(100)")]
    if rows != ["ok"]:
        for line in rows:
            diag.error("sqlite.integrity", line)
    diag.stats["integrity"] = "ok" if rows == ["ok"] else f"{len(rows)} problems"


def _hex(b: bytes) -> str:
    return b.hex()[:12]


class _StoreCheck:
    def __init__(
        self, conn: sqlite3.Connection, net: bytes, diag: Diagnosis, signatures: bool
    ) -> None:
        self.conn = conn
        self.net = net
        self.diag = diag
        self.signatures = signatures
        self.ord_of: dict[bytes, int] = {}  # id column -> ord, every stored op
        self.broken: set[bytes] = set()  # ids of stored ops that could not be re-applied
        self.downstream = 0  # ops not re-applied only because a dep is broken
        self.replica: Replica | None = None
        self.pending_ids: set[bytes] = set()

    def q(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        return self.conn.execute(sql, args).fetchall()

    def run(self) -> None:
        genesis = self._genesis()
        if genesis is None:
            return
        self.replica = Replica(genesis)
        self.ord_of = {bytes(i): o for i, o in self.q("SELECT id, ord FROM ops")}
        self._ops(genesis)
        self._pending()
        self._rejected()
        self._fold()

    # -- genesis ---------------------------------------------------------------------

    def _genesis(self) -> Op | None:
        diag = self.diag
        row = self.q("SELECT value FROM meta WHERE key = 'genesis'")
        if not row:
            diag.error("meta.genesis", "the store has no genesis op in its metadata")
            return None
        try:
            genesis = opsmod.decode(bytes(row[0][0]))
            Replica(genesis)  # checks the genesis on its own (schema, signature)
        except InvalidOp as exc:
            diag.error("meta.genesis", f"the stored genesis op is invalid: {exc}")
            return None
        if genesis.id != self.net:
            diag.error("meta.genesis", "the stored genesis is not the network's", genesis.id)
            return None
        first = self.q("SELECT id, raw FROM ops ORDER BY ord LIMIT 1")
        if not first or bytes(first[0][0]) != genesis.id or bytes(first[0][1]) != genesis.raw:
            diag.error("ops.genesis", "the first stored op is not the genesis", genesis.id)
        return genesis

    # -- ops ----------------------------------------------------------------------------

    def _rows(self) -> Iterator[list[Any]]:
        cur = self.conn.execute(
            "SELECT ord, id, raw, author, seq, lamport, kind, ts FROM ops ORDER BY ord"
        )
        while rows := cur.fetchmany(CHUNK):
            yield rows

    def _ops(self, genesis: Op) -> None:
        diag = self.diag
        kinds: Counter[str] = Counter()
        total, verified = 0, 1  # the genesis was verified by Replica(genesis)
        for rows in self._rows():
            decoded: list[tuple[int, bytes, Op]] = []
            for o, col_id, raw, author, seq, lamport, kind, ts in rows:
                total += 1
                col_id = bytes(col_id)
                op = self._decode(o, col_id, bytes(raw))
                if op is None:
                    continue
                kinds[op.kind] += 1
                cols = (bytes(author), seq, lamport, kind, ts)
                if (op.author, op.seq, op.lamport, op.kind, op.ts) != cols:
                    msg = "its author/seq/lamport/kind/ts columns do not match its bytes"
                    diag.error("op.columns", f"op {_hex(col_id)} (ord {o}): {msg}", col_id)
                if op.id == genesis.id:
                    continue
                decoded.append((o, col_id, op))
            good = self._signatures([op for _, _, op in decoded])
            verified += len(decoded) if self.signatures else 0
            for (o, col_id, op), ok in zip(decoded, good, strict=True):
                if not ok:
                    diag.error(
                        "op.signature",
                        f"op {_hex(col_id)} (ord {o}): the signature does not verify"
                        + self._id_note(col_id, op),
                        col_id,
                    )
                    self.broken.add(col_id)
                    continue
                if op.id != col_id:
                    diag.error(
                        "op.id",
                        f"op {_hex(op.id)} (ord {o}): the id column says {_hex(col_id)}, "
                        f"the BLAKE2b of its bytes is {_hex(op.id)}",
                        op.id,
                    )
                self._replay(o, op)
        if self.downstream:
            diag.error(
                "op.downstream",
                f"{self.downstream} stored ops depend on damaged or missing ops "
                "and cannot be re-applied",
            )
        diag.stats.update(
            ops=total, ops_by_kind=dict(sorted(kinds.items())), signatures_verified=verified
        )

    def _id_note(self, col_id: bytes, op: Op) -> str:
        if op.id == col_id:
            return ""
        return f" and its bytes hash to {_hex(op.id)}, not its id: the stored bytes are damaged"

    def _decode(self, o: int, col_id: bytes, raw: bytes) -> Op | None:
        diag = self.diag
        try:
            op = opsmod.decode(raw)
        except InvalidOp as exc:
            msg = f"op {_hex(col_id)} (ord {o}): the stored bytes do not decode ({exc})"
            diag.error("op.encoding", msg, col_id)
            self.broken.add(col_id)
            return None
        if self.net not in (op.net, op.id):  # the genesis has net 0*32 and id = net
            diag.error("op.net", f"op {_hex(col_id)} (ord {o}): network {_hex(op.net)}", col_id)
            self.broken.add(col_id)
            return None
        return op

    def _signatures(self, ops: list[Op]) -> list[bool]:
        if not self.signatures:
            return [True] * len(ops)
        return verify_all(ops)

    def _replay(self, o: int, op: Op) -> None:
        r = self.replica
        assert r is not None
        missing = [d for d in op.deps if d not in r.meta]
        if missing:
            self.broken.add(op.id)
            if any(d in self.broken for d in missing):
                self.downstream += 1
                return
            d = missing[0]
            later = self.ord_of.get(d)
            if later is not None:
                self.diag.error(
                    "op.order",
                    f"op {_hex(op.id)} (ord {o}) is stored before its dep {_hex(d)} "
                    f"(ord {later}): the ops table is not in causal order",
                    op.id,
                )
            else:
                msg = f"op {_hex(op.id)} (ord {o}): its dep {_hex(d)} is not stored"
                self.diag.error("op.missing_dep", msg, op.id)
            return
        result = r.ingest(op, verified=True)
        if result.applied and result.applied[0].id == op.id:
            return
        self.broken.add(op.id)
        if result.duplicates:
            self.diag.error("op.duplicate", f"op {_hex(op.id)} (ord {o}) is stored twice")
        else:
            code, detail = result.rejected[0][1:] if result.rejected else ("?", "not applied")
            self.diag.error(
                "op.invalid",
                f"op {_hex(op.id)} (ord {o}) is invalid when re-applied: {code}: {detail}",
                op.id,
            )

    # -- pending and rejected -----------------------------------------------------------

    def _pending(self) -> None:
        r, diag = self.replica, self.diag
        assert r is not None
        rows = [(bytes(i), bytes(raw)) for i, raw in self.q("SELECT id, raw FROM pending")]
        ops: list[Op] = []
        for col_id, raw in rows:
            if col_id in self.ord_of:
                diag.error("pending.applied", f"op {_hex(col_id)} is stored and pending")
            try:
                op = opsmod.decode(raw)
            except InvalidOp as exc:
                diag.error("pending.encoding", f"pending op {_hex(col_id)}: {exc}", col_id)
                continue
            if op.id != col_id:
                diag.error("pending.id", f"pending op {_hex(col_id)}: id does not match")
            elif op.net != self.net:
                diag.error("pending.net", f"pending op {_hex(col_id)}: another network")
            else:
                ops.append(op)
        for op, ok in zip(ops, self._signatures(ops), strict=True):
            if not ok:  # the store re-applies pending ops without verifying them again
                diag.error("pending.signature", f"pending op {op.short()}: bad signature", op.id)
            elif all(d in r.meta for d in op.deps):
                diag.add(
                    WARNING,
                    "pending.ready",
                    f"pending op {op.short()} has every dep stored (applied on next open)",
                    op.id,
                )
        diag.stats["pending"] = len(rows)
        diag.stats["pending_bytes"] = sum(len(raw) for _, raw in rows)
        self.pending_ids = {i for i, _ in rows}

    def _rejected(self) -> None:
        diag = self.diag
        by_code: Counter[str] = Counter()
        rejected = 0
        for rid, code in self.q("SELECT id, code FROM rejected"):
            rejected += 1
            by_code[str(code)] += 1
            rid = bytes(rid)
            if rid in self.ord_of:
                diag.error("rejected.applied", f"op {_hex(rid)} is stored and rejected", rid)
            if rid in self.pending_ids:
                diag.error("rejected.pending", f"op {_hex(rid)} is pending and rejected", rid)
        diag.stats["rejected"] = rejected
        diag.stats["rejected_by_code"] = dict(by_code.most_common())

    # -- the fold -------------------------------------------------------------------------

    def _fold(self) -> None:
        r, diag = self.replica, self.diag
        assert r is not None
        diag.stats["root"] = r.root()
        stored_root = state_root(sorted(self.ord_of), len(self.ord_of))
        diag.stats["stored_root"] = stored_root
        if self.broken:
            diag.add(
                INFO,
                "fold.skipped",
                f"materialised tables not compared: {len(self.broken)} stored ops "
                "could not be re-applied",
            )
            return
        if stored_root != r.root():
            diag.error(
                "fold.root",
                f"the state root of the stored op ids ({_hex(stored_root)}) differs from "
                f"the recomputed one ({_hex(r.root())})",
            )
        enc = encoding.encode
        t = r.policy.synthesis_threshold
        fixes = snapshot.fix_rows(r)
        for name, key, more, rows, cols in (
            ("patterns", "pattern", ", service, count, reporters", snapshot.pattern_rows(r),
             lambda p: (p["service"], p["count"], p["reporters"])),
            ("fixes", "fix", ", pattern, status", fixes, lambda f: (f["pattern"], f["status"])),
            ("members", "key", "", snapshot.member_rows(r), lambda m: ()),
            ("goals", "goal", ", active", snapshot.goal_rows(r), lambda g: (int(g["active"]),)),
        ):  # fmt: skip
            self._table(name, f"SELECT {key}, doc{more} FROM {name}", key, rows, cols)
        stored_eq = {
            (bytes(a), s): bytes(ids) for a, s, ids in self.q("SELECT * FROM equivocations")
        }
        if stored_eq != {k: enc(v) for k, v in r.equivocations.items()}:
            diag.error("fold.equivocations", "the equivocations table differs from the ops")
        heads = {bytes(h) for (h,) in self.q("SELECT id FROM heads")}
        if heads != r.heads:
            diag.error(
                "fold.heads",
                f"the heads table lists {len(heads)} heads; the ops give {len(r.heads)} "
                f"({len(heads - r.heads)} extra, {len(r.heads - heads)} missing)",
            )
        diag.stats.update(
            heads=len(r.heads),
            authors=len(r.last_seq),
            patterns=len(r.fold.patterns),
            over_threshold=sum(1 for p in r.fold.patterns.values() if p.reporters >= t),
            fixes=dict(Counter(f["status"] for f in fixes)),
            equivocations=len(r.equivocations),
        )

    def _table(
        self,
        name: str,
        sql: str,
        key_field: str,
        rows: list[dict[str, Any]],
        columns: Callable[[dict[str, Any]], tuple[Any, ...]],
    ) -> None:
        check = f"fold.{name}"
        expected = {row[key_field]: row for row in rows}
        seen: set[bytes] = set()
        for key, doc, *cols in self.q(sql):
            key = bytes(key)
            seen.add(key)
            want = expected.get(key)
            if want is None:
                self.diag.error(check, f"{name} row {_hex(key)} is not in the fold", key)
                continue
            if bytes(doc) == encoding.encode(want) and tuple(
                bytes(c) if isinstance(c, bytes) else c for c in cols
            ) == columns(want):
                continue
            self.diag.error(check, f"{name} row {_hex(key)}: {_difference(bytes(doc), want)}", key)
        for key in expected.keys() - seen:
            self.diag.error(check, f"{name} row {_hex(key)} is missing", key)


def _difference(stored: bytes, want: dict[str, Any]) -> str:
    """Name the fields in which a stored row differs from the recomputed one."""
    try:
        have = encoding.decode(stored)
    except EncodingError as exc:
        return f"the stored row does not decode ({exc})"
    if not isinstance(have, dict):
        return "the stored row is not a map"
    canon = encoding.decode(encoding.encode(want))
    fields = sorted(k for k in have.keys() | canon.keys() if have.get(k) != canon.get(k))
    if not fields:
        return "an indexed column differs from the row"
    parts = [f"{k} stored {_show(have.get(k))}, recomputed {_show(canon.get(k))}" for k in fields]
    return "; ".join(parts[:3]) + (f" (+{len(parts) - 3} fields)" if len(parts) > 3 else "")


def _show(v: Any) -> str:
    if isinstance(v, bytes):
        return _hex(v)
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."
