"""The bounded pending buffer: ops waiting for their deps (protocol §7)."""

from __future__ import annotations

from collections import OrderedDict

from gossipmind.core.ops import Op

DEFAULT_MAX_OPS = 10_000
DEFAULT_MAX_BYTES = 32 * 1024 * 1024


class Pending:
    """Ops whose deps are not all applied yet, indexed by the deps they wait for.

    Bounded in count and bytes; when full, the oldest waiting op is evicted
    (anti-entropy fetches it again later, so eviction loses nothing acknowledged).
    """

    def __init__(self, max_ops: int = DEFAULT_MAX_OPS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_ops = max_ops
        self.max_bytes = max_bytes
        self.ops: OrderedDict[bytes, tuple[Op, set[bytes]]] = OrderedDict()
        self.waiting_on: dict[bytes, set[bytes]] = {}
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
        self.ops[op.id] = (op, set(missing))
        self.bytes += len(op.raw)
        for dep in missing:
            self.waiting_on.setdefault(dep, set()).add(op.id)
        evicted: list[bytes] = []
        while len(self.ops) > self.max_ops or self.bytes > self.max_bytes:
            oldest = next(iter(self.ops))
            self.remove(oldest)
            evicted.append(oldest)
            self.evicted += 1
        return evicted

    def remove(self, op_id: bytes) -> Op | None:
        entry = self.ops.pop(op_id, None)
        if entry is None:
            return None
        op, missing = entry
        self.bytes -= len(op.raw)
        for dep in missing:
            waiters = self.waiting_on.get(dep)
            if waiters is not None:
                waiters.discard(op_id)
                if not waiters:
                    del self.waiting_on[dep]
        return op

    def resolved(self, dep: bytes) -> list[Op]:
        """``dep`` was applied: return the ops that no longer wait for anything."""
        ready: list[Op] = []
        for op_id in sorted(self.waiting_on.pop(dep, ())):
            entry = self.ops.get(op_id)
            if entry is None:
                continue
            entry[1].discard(dep)
            if not entry[1]:
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
