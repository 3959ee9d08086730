"""What a sync session needs from a replica: a summary, missing ops, ops by id."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol


class OpSource(Protocol):
    """Implemented by the SQLite store (and by in-memory fakes for tests)."""

    net: bytes

    def version_vector(self) -> dict[bytes, int]:
        """author -> highest seq of its ops held (they are contiguous)."""

    def heads(self) -> list[bytes]: ...

    def root(self) -> bytes: ...

    def count(self) -> int: ...

    def has(self, op_id: bytes) -> bool:
        """Applied, pending or rejected: no need to receive it again."""

    def missing_for(self, vv: dict[bytes, int]) -> Iterator[bytes]:
        """Raw ops a peer with version vector ``vv`` lacks, in a causal order."""

    def get_raw(self, ids: Iterable[bytes]) -> Iterable[bytes]:
        """Raw ops for the ids held (applied ones only), in a causal order; may be
        lazy (consumed while the frames carrying them are sent)."""

    def wanted(self) -> set[bytes]:
        """Ids this replica knows it lacks: deps its pending ops wait for."""
