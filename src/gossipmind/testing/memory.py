"""An in-memory replica with raw op bytes: a sync OpSource for fakes and property tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gossipmind.core.ops import Op
from gossipmind.core.replica import IngestResult, Replica


class MemoryKB:
    """A replica plus the raw bytes of its applied ops, in application order."""

    def __init__(self, genesis: Op) -> None:
        self.replica = Replica(genesis)
        self.net = genesis.id
        self.raw: dict[bytes, bytes] = {genesis.id: genesis.raw}
        self.order: dict[bytes, int] = {genesis.id: 0}
        self.acked: list[bytes] = []

    def ingest_raw(self, raws: Iterable[bytes]) -> IngestResult:
        result = IngestResult()
        for raw in raws:
            result.extend(self.replica.ingest_raw(raw))
        for op in result.applied:
            self.raw[op.id] = op.raw
            self.order[op.id] = len(self.order)
        return result

    # -- OpSource ------------------------------------------------------------
    def version_vector(self) -> dict[bytes, int]:
        return dict(self.replica.last_seq)

    def heads(self) -> list[bytes]:
        return sorted(self.replica.heads)

    def root(self) -> bytes:
        return self.replica.root()

    def count(self) -> int:
        return len(self.replica.meta)

    def has(self, op_id: bytes) -> bool:
        return self.replica.known(op_id)

    def wanted(self) -> set[bytes]:
        return self.replica.pending.missing()

    def missing_for(self, vv: dict[bytes, int]) -> Iterator[bytes]:
        meta = self.replica.meta
        ids = [i for i, m in meta.items() if m.seq > vv.get(m.author, 0)]
        for i in sorted(ids, key=self.order.__getitem__):
            yield self.raw[i]

    def get_raw(self, ids: Iterable[bytes]) -> list[bytes]:
        held = [i for i in set(ids) if i in self.raw]
        return [self.raw[i] for i in sorted(held, key=self.order.__getitem__)]
