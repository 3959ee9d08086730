"""The rows of a :class:`~gossipmind.store.sqlite.Store` beyond its ops: the materialised
state it writes after each commit, and the reads of table ``ops`` that sync and the
node make.

Moved out of ``sqlite.py`` (which keeps the store's life cycle and its write path) so
that both stay under the module size limit:

* :func:`write_state` writes the patterns, fixes, goals, members and equivocations
  rows the fold marked dirty, and :func:`fold_stamp` which rules wrote them over how
  many ops (a mismatch on open rewrites them all);
* :class:`OpReads` is the part of :class:`~gossipmind.store.sqlite.Store` that reads
  ops back by id, author or order (a base class: ``Store`` owns ``conn``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence

from gossipmind.core import encoding, snapshot
from gossipmind.core.replica import FOLD_VERSION, Replica

__all__ = ["OpReads", "fold_stamp", "write_state"]


def write_state(conn: sqlite3.Connection, r: Replica, changed: bool) -> None:
    """Write the materialised rows the fold marked dirty (all of them when ``changed``
    and the fold says everything), then the fold stamp."""
    # fixes: those whose row may have changed, a goal change's among them (only
    # the fixes in the scopes it reaches whose violations or tier change)
    pats, fixes, goals, everything = r.fold.drain_dirty()
    if not changed and not (pats or fixes or goals or everything):
        return
    c = conn
    enc = encoding.encode
    threshold = r.policy.synthesis_threshold
    if everything:
        c.execute("DELETE FROM patterns")
        c.execute("DELETE FROM fixes")
        c.execute("DELETE FROM goals")
        pats, fixes, goals = set(r.fold.patterns), set(r.fold.fixes), set(r.fold.goals)
    rows = [snapshot.pattern_row(r.fold.patterns[p], threshold) for p in pats]
    c.executemany(
        "INSERT OR REPLACE INTO patterns VALUES (?, ?, ?, ?, ?)",
        [(x["pattern"], x["service"], x["count"], x["reporters"], enc(x)) for x in rows],
    )
    for fid in fixes:
        row = snapshot.fix_row(r, r.fold.fixes[fid])
        if row is None:
            c.execute("DELETE FROM fixes WHERE fix = ?", (fid,))
        else:
            c.execute(
                "INSERT OR REPLACE INTO fixes VALUES (?, ?, ?, ?)",
                (fid, row["pattern"], row["status"], enc(row)),
            )
    if goals:
        c.execute("DELETE FROM goals")
        c.executemany(
            "INSERT INTO goals VALUES (?, ?, ?)",
            [(g["goal"], int(g["active"]), enc(g)) for g in snapshot.goal_rows(r)],
        )
    if r.members_dirty or everything:
        r.members_dirty = False
        c.execute("DELETE FROM members")
        c.executemany(
            "INSERT INTO members VALUES (?, ?)",
            [(m["key"], enc(m)) for m in snapshot.member_rows(r)],
        )
    if r.forks_dirty is None or everything:
        c.execute("DELETE FROM equivocations")
        keys = list(r.equivocations)
    else:  # only the forks that changed: one row each, not every fork held
        keys = sorted(r.forks_dirty)
    r.forks_dirty = set()
    c.executemany(
        "INSERT OR REPLACE INTO equivocations VALUES (?, ?, ?)",
        [(a, s, enc(r.equivocations[a, s])) for a, s in keys],
    )
    c.execute("INSERT OR REPLACE INTO meta VALUES ('fold', ?)", (fold_stamp(r),))


def fold_stamp(replica: Replica) -> bytes:
    """Which rules wrote the rows, and over how many valid ops: written with
    the rows, so ops a release without the stamp adds (a rollback) show."""
    return f"{FOLD_VERSION}:{len(replica.meta)}".encode()


class OpReads:
    """Reads of table ``ops`` (for sync and the node); :class:`Store` provides ``conn``."""

    conn: sqlite3.Connection

    def raw(self, op_id: bytes) -> bytes | None:
        row = self.conn.execute("SELECT raw FROM ops WHERE id = ?", (op_id,)).fetchone()
        return bytes(row[0]) if row else None

    def ops_since(self, author: bytes, after_seq: int, limit: int) -> list[tuple[int, int, bytes]]:
        """(ord, seq, raw) of ``author``'s ops with seq > ``after_seq``, in seq order."""
        cur = self.conn.execute(
            "SELECT ord, seq, raw FROM ops WHERE author = ? AND seq > ? ORDER BY seq, ord LIMIT ?",
            (author, after_seq, limit),
        )
        return [(o, s, bytes(raw)) for o, s, raw in cur]

    def newest_of(
        self, author: bytes, kinds: Sequence[str], since_ts: int, limit: int
    ) -> list[tuple[str, int, bytes]]:
        """(kind, ts, raw) of ``author``'s latest ops of ``kinds``, newest (highest
        seq) first, down to the first one older than ``since_ts`` (left out), at
        most ``limit``: read back by seq (index ``ops_author_seq``; ``+kind`` keeps
        SQLite off index ``ops_kind``), never the whole table."""
        marks = ", ".join("?" * len(kinds))
        cur = self.conn.execute(
            f"SELECT kind, ts, raw FROM ops WHERE author = ? AND +kind IN ({marks})"
            " ORDER BY seq DESC, ord DESC",
            (author, *kinds),
        )
        out: list[tuple[str, int, bytes]] = []
        for kind, ts, raw in cur:
            if ts < since_ts or len(out) >= limit:
                break
            out.append((kind, ts, bytes(raw)))
        cur.close()
        return out

    def raws_in_order(self, ids: Iterable[bytes]) -> Iterator[bytes]:
        """Raw bytes of the applied ops among ``ids``, in application (causal) order.

        Lazy: the order is found first (ids only), then each op is read as it is
        consumed, so a request for 1 024 ops of up to 64 KiB each is never held
        in memory at once (the session sends it frame by frame).
        """
        found: list[tuple[int, bytes]] = []
        for op_id in ids:
            row = self.conn.execute("SELECT ord FROM ops WHERE id = ?", (op_id,)).fetchone()
            if row is not None:
                found.append((row[0], op_id))
        for _, op_id in sorted(found):
            row = self.conn.execute("SELECT raw FROM ops WHERE id = ?", (op_id,)).fetchone()
            if row is not None:
                yield bytes(row[0])

    def iter_raw(self, after_ord: int = 0, limit: int = 1000) -> Iterator[tuple[int, bytes]]:
        cur = self.conn.execute(
            "SELECT ord, raw FROM ops WHERE ord > ? ORDER BY ord LIMIT ?", (after_ord, limit)
        )
        for o, raw in cur:
            yield o, bytes(raw)
