"""The checks `gossipmind doctor` runs inside one read snapshot of a store: its
ops, pending and rejected rows, and the fold against the materialised tables
(see :mod:`gossipmind.store.doctor`).

A cell of the wrong type (text, a number or NULL where a BLOB belongs: what a
flipped bit in a record header makes of one) is a finding (``sqlite.type``),
never a crash; its row is left out of the checks that need it.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from gossipmind.core import encoding, snapshot
from gossipmind.core import ops as opsmod
from gossipmind.core.errors import EncodingError, InvalidOp
from gossipmind.core.ops import Op
from gossipmind.core.replica import FOLD_VERSION, Replica, state_root
from gossipmind.store.diagnosis import INFO, WARNING, Diagnosis
from gossipmind.store.verifier import verify_all

CHUNK = 2048  # ops decoded and verified together (bounded memory)
TYPE_CHECK = "sqlite.type"


def _hex(b: bytes) -> str:
    return b.hex()[:12]


class StoreCheck:
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
        self.damaged = 0  # cells of the wrong type
        self.stamp: bytes | None = None  # the fold stamp, if there is a readable one
        self.stamp_damaged = False
        self.stale: list[str] = []  # rows of older rules (_fold): not damage, rewritten

    def q(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        return self.conn.execute(sql, args).fetchall()

    def blob(self, where: str, value: object, ref: bytes | None = None) -> bytes | None:
        """``value`` if it is bytes; else an error finding naming the cell, and None."""
        if isinstance(value, bytes):
            return value
        self.damaged += 1
        self.diag.error(
            TYPE_CHECK, f"{where} is {_kind(value)}, not bytes: the row is damaged", ref
        )
        return None

    def run(self) -> None:
        self._fold_stamp()
        self._seqno()
        genesis = self._genesis()
        if genesis is None:
            return
        self.replica = Replica(genesis)
        self.ord_of = {i: o for i, o in self.q("SELECT id, ord FROM ops") if isinstance(i, bytes)}
        self._ops(genesis)
        self._pending()
        self._rejected()
        self._fold()

    # -- metadata and genesis ---------------------------------------------------------

    def _fold_stamp(self) -> None:
        """The stamp of the rules that wrote the materialised rows: bytes ``N:M``."""
        row = self.q("SELECT value FROM meta WHERE key = 'fold'")
        value = row[0][0] if row else None
        if isinstance(value, bytes) and re.fullmatch(rb"[0-9]+:[0-9]+", value):
            self.stamp = value
        elif row:
            self.stamp_damaged = True
            self.diag.error(
                "meta.fold",
                f"the fold stamp in the metadata is damaged ({_kind(value)}, not bytes "
                "N:M); a writer (the node) rewrites the materialised rows at its next open",
            )

    def _seqno(self) -> None:
        """The end of the gossip seqnos reserved (store/seqnos.py): 8 bytes, if any."""
        row = self.q("SELECT value FROM meta WHERE key = 'seqno'")
        value = row[0][0] if row else None
        if row and not (isinstance(value, bytes) and len(value) == 8):
            self.diag.add(
                WARNING,
                "meta.seqno",
                f"the gossip seqno reservation is damaged ({_kind(value)}, not 8 bytes); "
                "the node replaces it at its next start, from the clock",
            )

    def _genesis(self) -> Op | None:
        diag = self.diag
        row = self.q("SELECT value FROM meta WHERE key = 'genesis'")
        if not row:
            diag.error("meta.genesis", "the store has no genesis op in its metadata")
            return None
        if not isinstance(row[0][0], bytes):
            diag.error("meta.genesis", f"the stored genesis op is {_kind(row[0][0])}, not bytes")
            return None
        try:
            genesis = opsmod.decode(row[0][0])
            Replica(genesis)  # checks the genesis on its own (schema, signature)
        except InvalidOp as exc:
            diag.error("meta.genesis", f"the stored genesis op is invalid: {exc}")
            return None
        if genesis.id != self.net:
            diag.error("meta.genesis", "the stored genesis is not the network's", genesis.id)
            return None
        first = self.q("SELECT id, raw FROM ops ORDER BY ord LIMIT 1")
        if not first or first[0][0] != genesis.id or first[0][1] != genesis.raw:
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
            for o, id_cell, raw_cell, author, seq, lamport, kind, ts in rows:
                total += 1
                raw = self.blob(f"ops row ord {o}: raw", raw_cell)
                col_id = self.blob(f"ops row ord {o}: id", id_cell)
                if raw is None:
                    self.broken.add(col_id if col_id is not None else b"ord %d" % o)
                    continue
                col_id = opsmod.op_id(raw) if col_id is None else col_id  # already reported
                op = self._decode(o, col_id, raw)
                if op is None:
                    continue
                kinds[op.kind] += 1
                cols = (author, seq, lamport, kind, ts)
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
        cells = self.q("SELECT id, raw FROM pending")
        rows: list[tuple[bytes, bytes]] = []
        for i, raw in cells:
            col_id, data = self.blob("pending row: id", i), self.blob("pending row: raw", raw, i)
            if col_id is not None and data is not None:
                rows.append((col_id, data))
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
        diag.stats["pending"] = len(cells)
        diag.stats["pending_bytes"] = sum(len(raw) for _, raw in rows)
        self.pending_ids = {i for i, _ in rows}

    def _rejected(self) -> None:
        diag = self.diag
        by_code: Counter[str] = Counter()
        rejected = 0
        for rid, code in self.q("SELECT id, code FROM rejected"):
            rejected += 1
            by_code[str(code)] += 1
            rid = self.blob("rejected row: id", rid)
            if rid is None:
                continue
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
        # rows another release's rules wrote (its stamp names another fold version, or
        # there is none): not damage, a writing open rewrites them all. Rows that differ
        # under this version's own stamp are damage, whatever the count in the stamp.
        older = not self.stamp_damaged and (
            self.stamp is None or not self.stamp.startswith(f"{FOLD_VERSION}:".encode())
        )
        for name, key, more, rows, cols in (
            ("patterns", "pattern", ", service, count, reporters", snapshot.pattern_rows(r),
             lambda p: (p["service"], p["count"], p["reporters"])),
            ("fixes", "fix", ", pattern, status", fixes, lambda f: (f["pattern"], f["status"])),
            ("members", "key", "", snapshot.member_rows(r), lambda m: ()),
            ("goals", "goal", ", active", snapshot.goal_rows(r), lambda g: (int(g["active"]),)),
        ):  # fmt: skip
            self._table(name, f"SELECT {key}, doc{more} FROM {name}", key, rows, cols, older)
        if self.stale:
            self._stale()
        stored_eq: dict[tuple[bytes, Any], bytes] = {}
        for a, s, ids in self.q("SELECT author, seq, ids FROM equivocations"):
            author = self.blob("equivocations row: author", a)
            data = self.blob("equivocations row: ids", ids)
            if author is not None and data is not None:
                stored_eq[author, s] = data
        if stored_eq != {k: enc(v) for k, v in r.equivocations.items()}:
            diag.error("fold.equivocations", "the equivocations table differs from the ops")
        keys = sorted({author.hex()[:16] for author, _ in r.equivocations})
        if keys:  # not damage (the ops are valid), but every op of these keys is void
            diag.add(
                WARNING,
                "equivocations",
                f"{len(keys)} key(s) signed two different ops with one seq, and every op "
                f"they signed is void: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} "
                "(a copied data dir, a store restored from an old backup, or a compromised "
                "key: docs/operations.md section 12)",
            )
        cells = [self.blob("heads row: id", h) for (h,) in self.q("SELECT id FROM heads")]
        heads = {h for h in cells if h is not None}
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
        older: bool = False,
    ) -> None:
        """Compare a materialised table with the fold's rows; with ``older`` (rows
        another release's rules wrote), a row that differs is listed in ``stale``."""
        check = f"fold.{name}"

        def error(check: str, message: str, ref: bytes | None = None) -> None:
            if older:
                self.stale.append(message)
            else:
                self.diag.error(check, message, ref)

        expected = {row[key_field]: row for row in rows}
        seen: set[bytes] = set()
        for key_cell, doc_cell, *cols in self.q(sql):
            key = self.blob(f"{name} row: {key_field}", key_cell)
            doc = self.blob(f"{name} row {_hex(key) if key else '?'}: doc", doc_cell, key)
            if key is None:
                continue
            seen.add(key)
            want = expected.get(key)
            if want is None:
                error(check, f"{name} row {_hex(key)} is not in the fold", key)
                continue
            if doc is None:
                continue
            if doc == encoding.encode(want) and tuple(cols) == columns(want):
                continue
            error(check, f"{name} row {_hex(key)}: {_difference(doc, want)}", key)
        for key in expected.keys() - seen:
            error(check, f"{name} row {_hex(key)} is missing", key)

    def _stale(self) -> None:
        """One warning for the rows another release's fold rules wrote."""
        what = self.stamp.decode() if self.stamp else "none"
        self.diag.add(
            WARNING,
            "fold.rules",
            f"{len(self.stale)} materialised row(s) differ from the fold, as rows that "
            f"another release wrote may (fold stamp {what}; this gossipmind writes "
            f"{FOLD_VERSION}:<valid ops>): not damage, the node or a writing command "
            "rewrites every row at its next open, ops and state root untouched "
            f"(docs/operations.md section 10). First: {self.stale[0]}",
        )


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


def _kind(value: object) -> str:
    """What a cell holds, for a message: ``a str ('3:6')``, ``NULL``."""
    if value is None:
        return "NULL"
    return f"a {type(value).__name__} ({_show(value)})"
