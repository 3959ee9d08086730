"""Reading the bytes of applied ops back from ``ops`` (the fold's records,
:mod:`gossipmind.core.records`).

A rebuild (a revoke, a new equivocator) reads every record's bytes back, in the
order the ops were applied, :data:`CHUNK` ids at a time; the learner reads
the latest ones. The records are a subsequence of table ``ops`` in ``ord``
order (both are the order of application), so a chunk is read by one range
scan from the place of its first id, ``ord >= ?``: at 100 000 ops that takes
0.10 s where one ``id IN (…)`` query per chunk, a B-tree lookup per id, took
0.30 to 0.43 s. Ids the scan does not meet (an order that differs, more ops
between them than the scan reads) are read by ``id IN (…)``; a rebuild cannot
tell which way its bytes came.

Every op read back is hashed and compared with its id: bytes damaged on disk
are a :class:`StoreError` that sends the user to ``gossipmind doctor``, never
a body that the fold would count.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from gossipmind.core import ops as opsmod
from gossipmind.core.errors import StoreError
from gossipmind.core.records import CHUNK

SLACK = 64  # rows past a chunk's length a scan reads (ops that are no records: grants…)


def blob(path: Path, value: object, what: str) -> bytes:
    """A stored BLOB; anything else (what a flipped bit in a record header makes
    of one) is a StoreError that sends the user to doctor."""
    if isinstance(value, bytes):
        return value
    raise StoreError(
        f"{path}: {what} is damaged (a {type(value).__name__}, not bytes); run `gossipmind doctor`"
    )


def raws_of(conn: sqlite3.Connection, path: Path, ids: list[bytes]) -> dict[bytes, bytes]:
    """The bytes of applied ops, by id (ids not in ``ops`` are left out)."""
    out: dict[bytes, bytes] = {}
    for lo in range(0, len(ids), CHUNK):
        chunk = ids[lo : lo + CHUNK]
        want = set(chunk)
        first = conn.execute("SELECT ord FROM ops WHERE id = ?", (chunk[0],)).fetchone()
        if first is not None:
            rows = conn.execute(
                "SELECT id, raw FROM ops WHERE ord >= ? ORDER BY ord LIMIT ?",
                (first[0], len(chunk) + SLACK),
            )
            _take(path, (r for r in rows if r[0] in want), out)
        if missing := [i for i in chunk if i not in out]:
            marks = ",".join("?" * len(missing))
            query = f"SELECT id, raw FROM ops WHERE id IN ({marks})"  # (marks only)
            _take(path, conn.execute(query, missing), out)
    return out


def _take(path: Path, rows: Iterable[tuple[object, object]], out: dict[bytes, bytes]) -> None:
    for oid, raw in rows:
        op_id, data = blob(path, oid, "an id in table ops"), blob(path, raw, "an op")
        if opsmod.op_id(data) != op_id:  # (decoded without checks: it must be it)
            raise StoreError(
                f"{path}: the bytes of op {op_id.hex()[:12]} in table ops are damaged; "
                "run `gossipmind doctor`"
            )
        out[op_id] = data
