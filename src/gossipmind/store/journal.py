"""The report journal (``report_journal``): reports answered, not written yet.

The node answers a failure or outcome report (202) only once its journal row is
committed (node/reporter.py). A row holds what the node keeps of a report: the
REDUCED failure (pattern, names, error class, template, shape and the bounded
numbers; never the raw message or context: docs/learning.md §1) or the outcome
(fix, attempts, successes), encoded as canonical msgpack, with the report's id
(the SDK's, or one the node made up: ``sdk`` says which) and when it came.

When the op that counts a report commits, its row is deleted in the same
transaction (:meth:`~gossipmind.store.sqlite.Store.create_ops`): after a crash a
report is either in the journal or in an op, never both, never neither. When a
node opens its store, the rows left are counted again into its next window.

The table is local (never synced) and additive (created when missing; an older
gossipmind ignores it). Its size is bounded by the node (``MAX_JOURNAL`` in
node/reporter.py): past that bound a report is refused, not taken.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

Done = tuple[Sequence[bytes], Sequence[bytes]]  # report ids recorded, journal rows deleted
Row = tuple[bytes, bool, str, int, bytes]  # id, the SDK's id, kind, ts (ms), data

DDL = (
    "CREATE TABLE IF NOT EXISTS report_journal (id BLOB PRIMARY KEY, sdk INTEGER NOT NULL, "
    "kind TEXT NOT NULL, ts INTEGER NOT NULL, data BLOB NOT NULL) WITHOUT ROWID"
)


def ensure(conn: sqlite3.Connection) -> None:
    """Create the table if the store has none yet (in the caller's transaction)."""
    conn.execute(DDL)


def add(conn: sqlite3.Connection, rows: Iterable[Row]) -> None:
    """Journal ``rows`` (in the caller's transaction)."""
    conn.executemany(
        "INSERT OR REPLACE INTO report_journal (id, sdk, kind, ts, data) VALUES (?, ?, ?, ?, ?)",
        [(i, int(sdk), kind, ts, data) for i, sdk, kind, ts, data in rows],
    )


def delete(conn: sqlite3.Connection, ids: Iterable[bytes]) -> None:
    """Forget the rows of ``ids`` (in the caller's transaction): written, or dropped."""
    conn.executemany("DELETE FROM report_journal WHERE id = ?", [(i,) for i in ids])


def load(conn: sqlite3.Connection) -> list[Row]:
    """Every row, oldest first."""
    cur = conn.execute("SELECT id, sdk, kind, ts, data FROM report_journal ORDER BY ts, id")
    return [(bytes(i), bool(s), str(k), int(t), bytes(d)) for i, s, k, t, d in cur]
