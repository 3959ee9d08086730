"""Read-only queries over a store file: what the inspection CLI shows.

These work while a node is running (WAL readers never block the writer) and
while it is stopped; they never rebuild the replica and never write. A stopped
store is read without creating a ``-wal`` or ``-shm`` file beside it
(:class:`~gossipmind.store.sqlfile.ReadOnly`), so that reading works on a
read-only filesystem or a full disk.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from gossipmind.core import encoding
from gossipmind.core import ops as opsmod
from gossipmind.core.errors import GossipmindError, NotFound, StoreError
from gossipmind.core.replica import state_root
from gossipmind.store.sqlfile import ReadOnly, read_header


class Reader:
    """A read-only view of a store file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = ReadOnly(path)
        try:
            _, self.net = self._db.run(lambda conn: read_header(conn, path))
        except BaseException:
            self._db.close()
            raise

    @property
    def conn(self) -> sqlite3.Connection:
        """The read-only connection (for a query of one's own)."""
        return self._db.conn

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        return self._db.run(lambda conn: conn.execute(sql, args).fetchall())

    def _damaged(self, table: str, key: object, why: object) -> StoreError:
        if isinstance(key, bytes):
            row = key.hex()
        elif isinstance(key, str):
            row = key
        else:
            row = f"<{type(key).__name__}>"
        return StoreError(
            f"{self.path}: row {row} of table {table} is damaged ({why}); run `gossipmind doctor`"
        )

    def _blob(self, table: str, value: object) -> bytes:
        """A stored id (BLOB) as bytes; a damaged one (NULL, text, a number: what a
        flipped bit in a record header makes of it) is the same StoreError as a
        damaged doc."""
        if isinstance(value, bytes):
            return value
        raise self._damaged(table, value, f"an id is {type(value).__name__}, not bytes")

    def _doc(self, table: str, key: object, data: object) -> Any:
        """Decode a stored doc (or, for ``ops``, an op); a damaged one is a StoreError
        naming the store, the table and the row."""
        try:
            if not isinstance(data, bytes):
                raise StoreError(f"a {type(data).__name__}, not bytes")
            if table == "ops":
                return opsmod.decode(data)
            doc = encoding.decode(data)
            if not isinstance(doc, dict):
                raise StoreError(f"a {type(doc).__name__}, not a map")
            return doc
        except (GossipmindError, TypeError, ValueError) as exc:
            raise self._damaged(table, key, exc) from exc

    def _docs(self, table: str, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Decode the (key, doc) rows ``sql`` selects from ``table``."""
        return [self._doc(table, self._blob(table, k), d) for k, d in self._q(sql, args)]

    def _count(self, table: str) -> int:
        return int(self._q(f"SELECT COUNT(*) FROM {table}")[0][0])

    def status(self) -> dict[str, Any]:
        rows = self._q("SELECT value FROM meta WHERE key='genesis'")
        if not rows:
            raise StoreError(f"{self.path} has no genesis op; run `gossipmind doctor`")
        genesis = self._doc("ops", "meta.genesis", rows[0][0])
        by_kind = dict(self._q("SELECT kind, COUNT(*) FROM ops GROUP BY kind ORDER BY kind"))
        fixes = dict(self._q("SELECT status, COUNT(*) FROM fixes GROUP BY status"))
        return {
            "network": self.net,
            "name": genesis.body["name"],
            "ops": self._count("ops"),
            "ops_by_kind": by_kind,
            "heads": sorted(self._blob("heads", h) for (h,) in self._q("SELECT id FROM heads")),
            "pending": self._count("pending"),
            "rejected": self._count("rejected"),
            "members": self._count("members"),
            "patterns": self._count("patterns"),
            "fixes": fixes,
            "goals": self._count("goals"),
            "equivocations": self._count("equivocations"),
            "root": self.root(),
            "policy": genesis.body["policy"],
        }

    def root(self) -> bytes:
        """The state root, computed from the ops table (same rule as the replica)."""

        def read(conn: sqlite3.Connection) -> bytes:
            conn.execute("BEGIN")  # one snapshot for the count and the ids
            try:
                (count,) = conn.execute("SELECT COUNT(*) FROM ops").fetchone()
                rows = conn.execute("SELECT id FROM ops ORDER BY id")
                return state_root((self._blob("ops", i) for (i,) in rows), int(count))
            finally:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # a read: nothing to lose
                        conn.execute("COMMIT")

        return self._db.run(read)

    def patterns(self, *, service: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        sql = "SELECT pattern, doc FROM patterns"
        args: tuple[Any, ...] = ()
        if service:
            sql, args = sql + " WHERE service = ?", (service,)
        sql += " ORDER BY reporters DESC, count DESC, pattern LIMIT ?"
        return self._docs("patterns", sql, (*args, limit))

    def fixes(self, *, status: str | None = None, pattern: bytes | None = None) -> list[Any]:
        sql, args = "SELECT fix, doc FROM fixes WHERE 1=1", list[Any]()
        if status:
            sql += " AND status = ?"
            args.append(status)
        if pattern:
            sql += " AND pattern = ?"
            args.append(pattern)
        return self._docs("fixes", sql + " ORDER BY fix", tuple(args))

    def members(self, *, with_ops: bool = False) -> list[dict[str, Any]]:
        rows = self._docs("members", "SELECT key, doc FROM members ORDER BY key")
        if with_ops:
            seqs = dict(self._q("SELECT author, MAX(seq) FROM ops GROUP BY author"))
            for m in rows:
                m["ops"] = seqs.get(m["key"], 0)
        return rows

    def goals(self) -> list[dict[str, Any]]:
        return self._docs("goals", "SELECT goal, doc FROM goals ORDER BY goal")

    def log(self, *, limit: int = 50, kind: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT id, raw FROM ops", []
        if kind:
            sql += " WHERE kind = ?"
            args.append(kind)
        sql += " ORDER BY ord DESC LIMIT ?"
        rows = self._q(sql, (*args, limit))
        return [op_doc(self._doc("ops", self._blob("ops", i), raw)) for i, raw in rows]

    def rejected(self, *, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._q("SELECT id, code, detail FROM rejected ORDER BY ord DESC LIMIT ?", (limit,))
        return [{"id": self._blob("rejected", i), "code": c, "detail": d} for i, c, d in rows]

    def show(self, prefix: str) -> dict[str, Any]:
        """Find an op, pattern, fix, goal or member by a hex prefix (≥ 4 chars)."""
        bad = NotFound(f"{prefix!r} is not a hex id prefix of 4 to 64 characters")
        if not 4 <= len(prefix) <= 64:
            raise bad
        try:
            lo = bytes.fromhex(prefix.ljust(64, "0")[:64])
            hi = bytes.fromhex(prefix.ljust(64, "f")[:64])
        except ValueError:
            raise bad from None
        found: list[dict[str, Any]] = []
        tables = (
            ("fix", "fixes", "SELECT fix, doc FROM fixes WHERE fix BETWEEN ? AND ?"),
            (
                "pattern",
                "patterns",
                "SELECT pattern, doc FROM patterns WHERE pattern BETWEEN ? AND ?",
            ),
            ("goal", "goals", "SELECT goal, doc FROM goals WHERE goal BETWEEN ? AND ?"),
            ("member", "members", "SELECT key, doc FROM members WHERE key BETWEEN ? AND ?"),
        )
        for what, table, sql in tables:
            found.extend({"type": what, **d} for d in self._docs(table, sql, (lo, hi)))
        for doc in self._docs("ops", "SELECT id, raw FROM ops WHERE id BETWEEN ? AND ?", (lo, hi)):
            found.append({"type": "op", **op_doc(doc)})
        if not found:
            raise NotFound(f"nothing with id prefix {prefix}")
        ids = {
            bytes(f.get("fix") or f.get("pattern") or f.get("goal") or f.get("key") or f["id"])
            for f in found
        }
        if len(ids) == 1:  # a goal's id is its creating op's id: show the goal
            return found[0]
        if len(found) > 1:
            raise NotFound(f"id prefix {prefix} is ambiguous ({len(found)} matches)")
        return found[0]


def op_doc(op: opsmod.Op) -> dict[str, Any]:
    return {
        "id": op.id,
        "kind": op.kind,
        "author": op.author,
        "seq": op.seq,
        "lamport": op.lamport,
        "deps": list(op.deps),
        "ts": op.ts,
        "body": op.body,
        "size": len(op.raw),
    }
