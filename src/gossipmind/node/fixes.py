"""Accepted fixes as the agent sees them: lookup by pattern, ranking, transitions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gossipmind.core.ops import Op
from gossipmind.core.replica import MEMBERSHIP_KINDS, Replica
from gossipmind.core.snapshot import fix_row
from gossipmind.learn.rank import rank

FIX_KINDS = frozenset({"fix.propose", "fix.attest", "fix.revoke", "fix.outcome"})


@dataclass(frozen=True)
class Transition:
    fix: bytes
    old: str
    new: str
    row: dict[str, Any]


class FixIndex:
    """Tracks each fix's status; reports transitions as ops apply."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.status: dict[bytes, str] = {}
        for fid in replica.fold.fixes:
            row = self.row(fid)
            if row is not None:
                self.status[fid] = row["status"]

    def row(self, fid: bytes) -> dict[str, Any] | None:
        f = self.replica.fold.fixes.get(fid)
        return fix_row(self.replica, f) if f is not None else None

    def rows(
        self, *, pattern: bytes | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        out = []
        for f in self.replica.fold.fixes.values():
            if pattern is not None and f.pattern != pattern:
                continue
            row = fix_row(self.replica, f)
            if row is not None and (status is None or row["status"] == status):
                out.append(row)
        return out

    def best(self, pattern: bytes, *, canary: bool = False) -> dict[str, Any] | None:
        """The accepted fix for ``pattern`` with the best outcome evidence.

        With ``canary``, if none is accepted yet, a *provisional* one: proposed,
        accepted by at least one verifier, rejected by none, breaking no goal —
        what canary agents try so that senior verifiers get fleet evidence.
        """
        ranked = rank(self.rows(pattern=pattern, status="accepted"))
        if ranked:
            return dict(ranked[0])
        if not canary:
            return None
        provisional = [
            r
            for r in self.rows(pattern=pattern, status="proposed")
            if r["accepts"] and not r["rejects"] and not r["violations"]
        ]
        ranked = rank(provisional)
        return dict(ranked[0]) if ranked else None

    def touched(self, ops: list[Op]) -> list[Transition]:
        """Status changes caused by ``ops`` (every fix if membership changed)."""
        fids: set[bytes] = set()
        for op in ops:
            if op.kind in MEMBERSHIP_KINDS:
                fids = set(self.replica.fold.fixes)
                break
            if op.kind == "fix.propose":
                fids.update(
                    f.fix
                    for f in self.replica.fold.fixes.values()
                    if f.pattern == op.body["pattern"]
                )
            elif op.kind in FIX_KINDS:
                fids.add(op.body["fix"])
        out = []
        for fid in sorted(fids):
            row = self.row(fid)
            if row is None:
                continue
            old = self.status.get(fid, "unknown")
            if row["status"] != old:
                self.status[fid] = row["status"]
                out.append(Transition(fid, old, row["status"], row))
        return out
