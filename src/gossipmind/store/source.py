"""The store as a sync :class:`~gossipmind.sync.source.OpSource`."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

from gossipmind.store.sqlite import Store

# Rows read at a time by missing_for: at most 256 ops in memory (~256 KiB for
# ops of a kibibyte, 16 MiB at the 64 KiB limit).
_PAGE = 256
# A peer lacking fewer than one op in _DENSE of the range from its first missing
# op on, and at most _SPARSE_MAX ops, gets them looked up by author instead of
# the range read whole (their ord listed: 512 KiB, ~2.5 MiB while being sorted).
_DENSE = 8
_SPARSE_MAX = 65_536
_PAGE_SQL = "SELECT ord, author, seq, raw FROM ops WHERE ord > ? AND ord <= ? ORDER BY ord LIMIT ?"
_ORDS_SQL = "SELECT ord FROM ops WHERE author = ? AND seq > ? LIMIT ?"
_FIRST_SQL = "SELECT MIN(ord) FROM ops WHERE author = ? AND seq = ?"
_FIRST_AFTER_SQL = "SELECT MIN(ord) FROM ops WHERE author = ? AND seq > ?"


class StoreSource:
    """Serves sync sessions from a store. Use from the thread that owns the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.net = store.replica.net

    def version_vector(self) -> dict[bytes, int]:
        return dict(self.store.replica.last_seq)

    def heads(self) -> list[bytes]:
        return sorted(self.store.replica.heads)

    def root(self) -> bytes:
        return self.store.replica.root()

    def count(self) -> int:
        return len(self.store.replica.meta)

    def has(self, op_id: bytes) -> bool:
        return self.store.replica.known(op_id)

    def wanted(self) -> set[bytes]:
        return self.store.replica.pending.missing()

    def missing_for(self, vv: dict[bytes, int]) -> Iterator[bytes]:
        """The ops above the peer's seq of their author, in application (causal) order.

        In ``ord`` order (the order the store applied them), read from the first
        op the peer lacks up to the last one held when the session asked, a page
        of :data:`_PAGE` ops at a time: the memory a session holds does not
        depend on the size of the store. (One paged cursor per author, merged,
        held a page of every author at once before the first frame could go out:
        149 MiB for a peer with an empty vector and a 136 MiB store.) Where the
        ops the peer lacks are a small part of that range (fewer than one in
        :data:`_DENSE`, at most :data:`_SPARSE_MAX` of them), their ``ord`` are
        listed from the author index first and only they are read; otherwise the
        range is read whole, keeping the ops above the peer's seq.
        """
        conn = self.store.conn
        first, lacking = self._first_missing(vv)
        if first is None:
            return
        last = int(conn.execute("SELECT MAX(ord) FROM ops").fetchone()[0])
        ords = None
        if lacking <= _SPARSE_MAX and lacking * _DENSE < last - first + 1:
            ords = self._missing_ords(vv)
        if ords is not None:
            for start in range(0, len(ords), _PAGE):
                chunk = ords[start : start + _PAGE]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT raw FROM ops WHERE ord IN ({marks}) ORDER BY ord"
                for (raw,) in conn.execute(sql, chunk).fetchall():
                    yield bytes(raw)
            return
        after = first - 1
        while after < last:
            page = conn.execute(_PAGE_SQL, (after, last, _PAGE)).fetchall()
            for _, author, seq, raw in page:
                if seq > vv.get(bytes(author), 0):
                    yield bytes(raw)
            if len(page) < _PAGE:
                return
            after = page[-1][0]

    def _first_missing(self, vv: dict[bytes, int]) -> tuple[int | None, int]:
        """The lowest ``ord`` of an op the peer lacks (None: it lacks none), and how
        many ops it lacks by seq (forks uncounted).

        Each author's ops form a chain (the op of seq n depends on one of seq n-1),
        so its first op the peer lacks has seq ``vv + 1``: one index look-up per
        author we hold more of than the peer.
        """
        conn, first, lacking = self.store.conn, None, 0
        for author, seq in self.store.replica.last_seq.items():
            have = vv.get(author, 0)
            if seq <= have:
                continue
            lacking += seq - have
            row = conn.execute(_FIRST_SQL, (author, have + 1)).fetchone()
            if row is None or row[0] is None:  # not a chain after all: any later op
                row = conn.execute(_FIRST_AFTER_SQL, (author, have)).fetchone()
            if row is not None and row[0] is not None and (first is None or row[0] < first):
                first = int(row[0])
        return first, lacking

    def _missing_ords(self, vv: dict[bytes, int]) -> array[int] | None:
        """The sorted ``ord`` of the ops the peer lacks, from the author index; None
        if they are over :data:`_SPARSE_MAX` (forks: more than the seqs say)."""
        conn, out = self.store.conn, array("q")
        for author, seq in self.store.replica.last_seq.items():
            have = vv.get(author, 0)
            if seq <= have:
                continue
            room = _SPARSE_MAX - len(out)
            out.extend(o for (o,) in conn.execute(_ORDS_SQL, (author, have, room + 1)))
            if len(out) > _SPARSE_MAX:
                return None
        return array("q", sorted(out))

    def get_raw(self, ids: Iterable[bytes]) -> Iterable[bytes]:
        return self.store.raws_in_order(ids)
