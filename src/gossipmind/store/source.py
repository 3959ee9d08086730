"""The store as a sync :class:`~gossipmind.sync.source.OpSource`."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from gossipmind.store.sqlite import Store

_PAGE = 2000


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

    def _author_ops(self, author: bytes, after: int) -> Iterator[tuple[int, bytes]]:
        while True:
            page = self.store.ops_since(author, after, _PAGE)
            yield from ((o, raw) for o, _, raw in page)
            if len(page) < _PAGE:
                return
            after = page[-1][1]

    def missing_for(self, vv: dict[bytes, int]) -> Iterator[bytes]:
        """Per author, the ops above the peer's seq; merged in application (causal) order."""
        mine = self.store.replica.last_seq
        lacking = [a for a, s in mine.items() if s > vv.get(a, 0)]
        streams = [self._author_ops(a, vv.get(a, 0)) for a in sorted(lacking)]
        for _, raw in heapq.merge(*streams):
            yield raw

    def get_raw(self, ids: Iterable[bytes]) -> Iterable[bytes]:
        return self.store.raws_in_order(ids)
