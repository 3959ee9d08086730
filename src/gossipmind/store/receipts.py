"""Report ids the node took from its agents (``report_ids``): the SDK's re-sends.

An SDK gives each report a random 16-byte id and sends a report whose answer did
not come again with the same id (docs/sdk.md, "Delivery"). The node records the
ids of the reports an op carries in the transaction that commits that op
(:meth:`~gossipmind.store.sqlite.Store.create_ops`), so "committed" and
"remembered" cannot disagree: after a crash, either both the op and its ids are
on disk, or neither is, and a re-send after a restart is counted exactly once.

The ids are local to the node and its agents: they are never put in an op, and
never synced. The table is additive (created when missing; an older gossipmind
ignores it) and bounded: rows older than :data:`KEEP_S` are deleted as new ones
come, and at most :data:`MAX_ROWS` are kept (the oldest go first).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

KEEP_S = 3600  # s an id is remembered: well past the SDK's re-send bound (10 min)
MAX_ROWS = 200_000  # ids remembered at most (3.2 MB of ids, ~8 MB on disk)
ID_BYTES = 16

DDL = (
    "CREATE TABLE IF NOT EXISTS report_ids (id BLOB PRIMARY KEY, at INTEGER NOT NULL) "
    "WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS report_ids_at ON report_ids (at);"
)


def ensure(conn: sqlite3.Connection) -> None:
    """Create the table if the store has none yet (in the caller's transaction)."""
    for statement in DDL.split(";"):
        if statement.strip():
            conn.execute(statement)


def record(conn: sqlite3.Connection, ids: Iterable[bytes], now: float | None = None) -> None:
    """Remember ``ids`` (in the caller's transaction); forget expired and excess ones."""
    at = int(time.time() if now is None else now)
    rows = [(i, at) for i in ids]
    if not rows:
        return
    conn.executemany("INSERT OR IGNORE INTO report_ids (id, at) VALUES (?, ?)", rows)
    conn.execute("DELETE FROM report_ids WHERE at < ?", (at - KEEP_S,))
    (n,) = conn.execute("SELECT COUNT(*) FROM report_ids").fetchone()
    if n > MAX_ROWS:
        conn.execute(
            "DELETE FROM report_ids WHERE id IN "
            "(SELECT id FROM report_ids ORDER BY at, id LIMIT ?)",
            (n - MAX_ROWS,),
        )


def known(conn: sqlite3.Connection, rid: bytes) -> bool:
    """Whether a report with id ``rid`` was committed (and is still remembered)."""
    row = conn.execute("SELECT 1 FROM report_ids WHERE id = ?", (rid,)).fetchone()
    return row is not None
