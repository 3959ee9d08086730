"""The fold's records: each valid non-membership op as (meta, its bytes, roles).

A rebuild (a revoke, a new equivocator) and the learner read an op's body again
from its bytes. Held in memory, the bytes were about half of what a held op
costs (~440 of ~970 bytes). A replica backed by a store gives the records a
``loader``; the store then calls :meth:`Records.release` once ops are durable,
which drops the bytes it could read back, and iteration reads them back in
chunks (one query per :data:`CHUNK` records). Without a loader nothing is
released: a replica on its own keeps every op's bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from gossipmind.core.errors import StoreError

if TYPE_CHECKING:
    from gossipmind.core.fold import Meta
    from gossipmind.core.membership import Roles

CHUNK = 512  # records whose bytes are read back at a time
Loader = Callable[[list[bytes]], Mapping[bytes, bytes]]  # op ids -> their bytes


class Records:
    def __init__(self) -> None:
        self._items: list[tuple[Meta, bytes | None, Roles]] = []
        self._released = 0  # records before this index hold no bytes (when loader is set)
        self.loader: Loader | None = None

    def __len__(self) -> int:
        return len(self._items)

    def append(self, item: tuple[Meta, bytes, Roles]) -> None:
        self._items.append(item)

    def release(self) -> None:
        """Drop the bytes of every record so far (they are durable: the loader
        reads them back). Nothing without a loader."""
        if self.loader is None:
            return
        items = self._items
        for i in range(self._released, len(items)):
            meta, _, roles = items[i]
            items[i] = (meta, None, roles)
        self._released = len(items)

    @property
    def held(self) -> int:
        """Records whose bytes are in memory."""
        return sum(1 for _, raw, _ in self._items if raw is not None)

    def __iter__(self) -> Iterator[tuple[Meta, bytes, Roles]]:
        return self.since(0)

    def since(self, start: int) -> Iterator[tuple[Meta, bytes, Roles]]:
        """The records from index ``start`` on, each with its bytes."""
        items = self._items
        for lo in range(start, len(items), CHUNK):
            window = items[lo : lo + CHUNK]
            loaded = self._load([m.id for m, raw, _ in window if raw is None])
            for meta, raw, roles in window:
                yield meta, raw if raw is not None else loaded[meta.id], roles

    def reassess(self, roles_of: Callable[[Meta, bytes], Roles]) -> None:
        """Give every record the roles ``roles_of(meta, raw)`` returns (a rebuild),
        keeping released records released."""
        items = self._items
        for i, (meta, raw, _) in enumerate(self.since(0)):
            items[i] = (meta, items[i][1], roles_of(meta, raw))

    def _load(self, ids: list[bytes]) -> Mapping[bytes, bytes]:
        if not ids:
            return {}
        if self.loader is None:  # pragma: no cover - nothing is released without one
            raise StoreError("records were released without a loader")
        loaded = self.loader(ids)
        if missing := [i for i in ids if i not in loaded]:
            raise StoreError(
                f"{len(missing)} applied op(s) gone from the store (first {missing[0].hex()}): "
                "run `gossipmind doctor`"
            )
        return loaded
