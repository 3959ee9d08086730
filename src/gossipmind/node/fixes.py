"""Accepted fixes as the agent sees them: lookup by pattern, ranking, transitions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gossipmind.core.ops import Op
from gossipmind.core.replica import MEMBERSHIP_KINDS, Replica
from gossipmind.core.snapshot import fix_row
from gossipmind.learn.rank import rank

FIX_KINDS = frozenset({"fix.propose", "fix.attest", "fix.revoke", "fix.outcome"})
# Ops that can change any fix's status: membership (who may attest).
ALL_FIXES_KINDS = MEMBERSHIP_KINDS
# Goal ops change the fixes in the scopes of the goals they change, those whose
# violations or needed tier differ (Fold.fixes_goals_change), found at take().
GOAL_KINDS = frozenset({"goal.set", "goal.review"})


@dataclass(frozen=True)
class Transition:
    fix: bytes
    old: str
    new: str
    row: dict[str, Any]


class FixChanges:
    """Which fixes the ops applied since the last :meth:`take` may have changed:
    their row (status, attestations, outcomes, pattern scope), or whether they
    have one. Fed every applied op (:meth:`note`, as ``Node._applied`` does).

    Shared by :class:`FixIndex` (status transitions, for the SDK) and the
    verifier (which fixes a pass reads: ``node/verifier.py``).
    """

    def __init__(self, replica: Replica, *, everything: bool = False) -> None:
        self.replica = replica
        self._dirty: set[bytes] = set()  # fixes whose row may have changed
        self._all_dirty = everything
        self._recomputes = replica.recomputes  # as of the last note()
        # patterns with a known report: the first report of a pattern gives its fixes
        # their pattern scope, which can change their status (protocol.md §6.5).
        # Unused while every fix is marked: take() fills it then.
        self._patterns: set[bytes] = set() if everything else set(replica.fold.patterns)
        self._goals = replica.fold.active_goals()  # as of the last take()
        self._goal_ops = False  # a goal op since the last take()
        self.noted = 0  # ops noted since the last take(): see Verifier.due

    def note(self, ops: list[Op]) -> None:
        """Remember which fixes ``ops`` may have changed; :meth:`take` returns them.

        Cheap and bounded (a set of fix ids, at most every fix in the replica), so
        it runs inline as ops apply; no burst of ops can overflow it. A
        whole-set recomputation since the last call (a revoke, or an op of any
        kind that made its author an equivocator) may have changed any fix.
        """
        self.noted += len(ops)
        if self.replica.recomputes != self._recomputes:
            self._recomputes = self.replica.recomputes
            self.everything()
        if self._all_dirty:
            return
        for op in ops:
            if op.kind in ALL_FIXES_KINDS:
                self.everything()
                return
            if op.kind in GOAL_KINDS:
                self._goal_ops = True
            elif op.kind == "pattern.report":
                pid = op.body["pattern"]
                if pid not in self._patterns and pid in self.replica.fold.patterns:
                    self._patterns.add(pid)
                    self._dirty.update(self.replica.fold.fixes_of.get(pid, ()))
            elif op.kind == "fix.propose":  # its pattern's fixes, from the fold's index:
                # a scan of every fix per proposal cost O(proposals x fixes) inline
                self._dirty.update(self.replica.fold.fixes_of.get(op.body["pattern"], ()))
            elif op.kind in FIX_KINDS:
                self._dirty.add(op.body["fix"])

    def everything(self) -> None:
        """Mark every fix (a recomputation, a membership op)."""
        self._all_dirty = True
        self._dirty.clear()

    @property
    def dirty(self) -> bool:
        return self._all_dirty or bool(self._dirty) or self._goal_ops

    def take(self) -> set[bytes] | None:
        """The fixes marked since the last take (None: every fix), and start afresh."""
        fold = self.replica.fold
        fids = None if self._all_dirty else self._dirty
        goals = fold.active_goals()
        if fids is None:  # every fix is read with the patterns known now: a later
            # report of one of them is no first report (note() skips ops meanwhile)
            self._patterns = set(fold.patterns)
        elif self._goal_ops:  # the fixes whose goal effect changed since the last take
            fids |= fold.fixes_goals_change(self._goals, goals)
        self._goals, self._goal_ops = goals, False
        self._dirty = set()
        self._all_dirty = False
        self.noted = 0
        return fids


class FixIndex(FixChanges):
    """Tracks each fix's status; reports transitions as ops apply."""

    def __init__(self, replica: Replica) -> None:
        super().__init__(replica)
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
        accepted by at least one verifier, rejected by none, breaking no goal, and
        with its pattern's scope (a report of the pattern is known) — what canary
        agents try so that senior verifiers get fleet evidence.
        """
        ranked = rank(self.rows(pattern=pattern, status="accepted"))
        if ranked:
            return dict(ranked[0])
        if not canary:
            return None
        provisional = [
            r
            for r in self.rows(pattern=pattern, status="proposed")
            if r["accepts"]
            and not r["rejects"]
            and not r["violations"]
            and r["pattern_scope"] == r["scope"]
        ]
        ranked = rank(provisional)
        return dict(ranked[0]) if ranked else None

    def drain(self) -> list[Transition]:
        """The status changes since the last drain, for the fixes :meth:`note` saw."""
        taken = self.take()
        fids = set(self.replica.fold.fixes) if taken is None else taken
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
