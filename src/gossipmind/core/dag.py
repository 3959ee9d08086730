"""The bounded pending buffer: ops waiting for their deps (protocol §8)."""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from gossipmind.core import ops as opsmod
from gossipmind.core.ops import Op

DEFAULT_MAX_OPS = 10_000
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
# What a parked op holds beyond its encoding (CPython 3.11, measured by
# tests/core/test_pending.py): the entry, and per missing dep its id, its place
# in the entry's set and in the index by dep. The byte bound counts these, so an
# op naming 64 deps that exist nowhere costs ~25 KiB of the bound, not ~2.5 KiB.
ENTRY_COST = 512
DEP_COST = 384


def cost(encoded: int, missing: int) -> int:
    """What a parked op of ``encoded`` bytes waiting for ``missing`` deps counts."""
    return encoded + ENTRY_COST + DEP_COST * missing


class Waiting(NamedTuple):
    """A parked op: its bytes (decoded again when released: a decoded op costs
    several times its encoding in memory), its author and seq, what it waits for."""

    raw: bytes
    author: bytes
    seq: int
    missing: set[bytes]


class Pending:
    """Ops whose deps are not all applied yet, indexed by the deps they wait for.

    Bounded in count and bytes; when full, the oldest waiting op is evicted
    (anti-entropy fetches it again later, so eviction loses nothing acknowledged).
    Ops are kept encoded, and :attr:`bytes` counts the memory an entry holds —
    its encoding plus :data:`ENTRY_COST` plus :data:`DEP_COST` per dep it still
    waits for — so the byte bound bounds memory, whatever the ops look like.
    """

    def __init__(self, max_ops: int = DEFAULT_MAX_OPS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_ops = max_ops
        self.max_bytes = max_bytes
        self.ops: OrderedDict[bytes, Waiting] = OrderedDict()
        self.waiting_on: dict[bytes, set[bytes]] = {}
        self._by_author: dict[bytes, dict[bytes, int]] = {}  # author -> {op id: seq}
        self.bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.ops)

    def __contains__(self, op_id: bytes) -> bool:
        return op_id in self.ops

    def add(self, op: Op, missing: set[bytes]) -> list[bytes]:
        """Park ``op`` until every id in ``missing`` is applied; return evicted ids."""
        if op.id in self.ops:
            return []
        self.ops[op.id] = Waiting(op.raw, op.author, op.seq, set(missing))
        self._by_author.setdefault(op.author, {})[op.id] = op.seq
        self.bytes += cost(len(op.raw), len(missing))
        for dep in missing:
            self.waiting_on.setdefault(dep, set()).add(op.id)
        evicted: list[bytes] = []
        while len(self.ops) > self.max_ops or self.bytes > self.max_bytes:
            oldest = next(iter(self.ops))
            self._drop(oldest)
            evicted.append(oldest)
            self.evicted += 1
        return evicted

    def remove(self, op_id: bytes) -> Op | None:
        """Take the op out, decoded again (``add`` took a decoded op: no checks)."""
        entry = self._drop(op_id)
        return opsmod.decode_checked_before(entry.raw) if entry is not None else None

    def _drop(self, op_id: bytes) -> Waiting | None:
        entry = self.ops.pop(op_id, None)
        if entry is None:
            return None
        self.bytes -= cost(len(entry.raw), len(entry.missing))
        mine = self._by_author[entry.author]
        del mine[op_id]
        if not mine:
            del self._by_author[entry.author]
        for dep in entry.missing:
            waiters = self.waiting_on.get(dep)
            if waiters is not None:
                waiters.discard(op_id)
                if not waiters:
                    del self.waiting_on[dep]
        return entry

    def raw(self, op_id: bytes) -> bytes | None:
        entry = self.ops.get(op_id)
        return entry.raw if entry is not None else None

    def seqs_of(self, author: bytes) -> list[int]:
        """The seqs of ``author``'s ops waiting here."""
        return list(self._by_author.get(author, {}).values())

    def resolved(self, dep: bytes) -> list[Op]:
        """``dep`` was applied: return the ops that no longer wait for anything."""
        ready: list[Op] = []
        for op_id in sorted(self.waiting_on.pop(dep, ())):
            entry = self.ops.get(op_id)
            if entry is None:
                continue
            if dep in entry.missing:
                entry.missing.discard(dep)
                self.bytes -= DEP_COST
            if not entry.missing:
                op = self.remove(op_id)
                if op is not None:
                    ready.append(op)
        return ready

    def dropped(self, dep: bytes) -> list[Op]:
        """``dep`` was rejected: every op waiting on it is removed and returned."""
        out: list[Op] = []
        for op_id in sorted(self.waiting_on.get(dep, set()).copy()):
            op = self.remove(op_id)
            if op is not None:
                out.append(op)
        return out

    def missing(self) -> set[bytes]:
        """Deps that some pending op waits for and that are not pending themselves."""
        return {d for d in self.waiting_on if d not in self.ops}
