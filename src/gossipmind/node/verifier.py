"""The verifier loop of a node granted the verifier role.

For every proposed fix in one of its scopes that it has not judged yet, it runs
:func:`gossipmind.verify.checks.check_fix` and signs a ``fix.attest`` with the
verdict, the reasons and the evidence; it revokes accepted fixes whose fleet
outcomes turned bad. A pass reads only the fixes whose row the ops applied since
the last pass can have changed (:class:`~gossipmind.node.fixes.FixChanges`, fed
by ``Node._applied``), every fix when its roles changed or when ops applied
that it was not told of.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

from gossipmind.core.errors import GossipmindError
from gossipmind.core.ops import Op
from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import fix_row, pattern_row
from gossipmind.node.fixes import FixChanges
from gossipmind.verify.checks import fleet_evidence, judge

log = logging.getLogger("gossipmind.node.verifier")

Write = Callable[[str, dict[str, Any]], Awaitable[object]]


@dataclass
class VerifierStats:
    checked: int = 0
    accepted: int = 0
    rejected: int = 0
    waiting: int = 0
    revoked: int = 0
    out_of_scope: int = 0
    errors: int = 0  # fixes skipped because judging them raised (logged with a traceback)


class Verifier:
    def __init__(self, replica: Replica, key: bytes, write: Write, *, tick_s: float = 0.5) -> None:
        self.replica = replica
        self.key = key
        self._write = write
        self.tick_s = tick_s
        self.stats = VerifierStats()
        self._judged: set[bytes] = set()
        self._waiting: dict[bytes, tuple[int, int, int]] = {}  # fix -> outcomes last seen
        # Fixes outside my scopes as of the roles in _roles_seen: skipped (and counted
        # once) until my roles change, e.g. when the grant of a node started before
        # it arrives, or a grant that widens my scopes.
        self._out_of_scope: set[bytes] = set()
        self._roles_seen: object = None
        self._seen: tuple[int, int] | None = None  # (ops held, recomputes) at the last pass
        # which fixes a pass reads: those the ops since the last pass can have changed
        self.changes = FixChanges(replica, everything=True)
        self._held = len(replica.meta)  # ops held at the last take of `changes`
        self._retry: set[bytes] = set()  # a write for these failed: read them again
        self.passes = 0  # ticks that looked at the fixes
        self.equivocating = False  # my key equivocated: I sign nothing more, ever

    def note(self, ops: list[Op]) -> None:
        """Ops just applied to the replica (``Node._applied``): the fixes they can
        change are read at the next pass."""
        self.changes.note(ops)

    def _roles_changed(self) -> bool:
        roles = self.replica.roles(self.key)
        seen = (sorted(roles.roles), sorted(roles.verifier), roles.revoked)
        if seen == self._roles_seen:
            return False
        self._roles_seen = seen
        self._out_of_scope.clear()
        return True

    def due(self) -> set[bytes] | None:
        """The fixes the next pass reads (None: every fix), and start afresh.

        Those :meth:`note` marked (any op that can change a fix's row: see
        :class:`~gossipmind.node.fixes.FixChanges`) and those whose write failed.
        A fix left waiting (for its pattern, for fleet evidence) is read again
        when an op marks it: its pattern's first report, its outcomes. Every fix
        when my roles changed (scopes, tiers), or when the replica holds ops
        :meth:`note` was not told of (a replica used without a node).
        """
        held = len(self.replica.meta)
        unnoted = held - self._held - self.changes.noted
        fids = self.changes.take()
        self._held = held
        roles_changed = self._roles_changed()
        if fids is None or unnoted > 0 or roles_changed:
            self._retry.clear()
            return None
        fids |= self._retry
        self._retry = set()
        return fids

    def pending(self, fids: Iterable[bytes] | None = None) -> list[dict[str, Any]]:
        """Fix rows in my scopes that wait for my verdict, among ``fids`` (None:
        every fix)."""
        if self._roles_changed():
            fids = None
        roles = self.replica.roles(self.key)
        fixes = self.replica.fold.fixes
        out = []
        for fid in fixes if fids is None else sorted(fids):
            if fid in self._judged or fid in self._out_of_scope:
                continue
            f = fixes.get(fid)
            if f is None:
                continue
            row = fix_row(self.replica, f)
            if row is None or row["status"] != "proposed":
                continue
            if any(a["verifier"] == self.key for a in row["attestations"]):
                self._judged.add(f.fix)
                continue
            tier = roles.tier_for(row["scope"])
            if tier < 1 or tier >= 3:  # tier 3 is a person: they sign with `gossipmind review`
                self.stats.out_of_scope += 1
                self._out_of_scope.add(f.fix)
                continue
            out.append(row)
        return out

    async def judge(self, row: dict[str, Any]) -> str:
        r = self.replica
        p = r.fold.patterns.get(row["pattern"])
        if p is None:
            return "wait"  # the drill needs the pattern's statistics: they come by gossip
        pattern = pattern_row(p, r.policy.synthesis_threshold)
        tier = r.roles(self.key).tier_for(row["scope"])
        # the raw counters: the capped ones stop moving once every agent reached the cap
        seen = (
            sum(o[1] for o in row["outcomes"]),
            sum(o[2] for o in row["outcomes"]),
            row["outcome_reporters"],
        )
        if self._waiting.get(row["fix"]) == seen:
            return "wait"  # no new evidence since we last looked
        verdict = judge(row, pattern, r.policy, tier)
        if verdict is None:  # a senior verifier waits for fleet evidence
            self._waiting[row["fix"]] = seen
            self.stats.waiting += 1
            return "wait"
        self._waiting.pop(row["fix"], None)
        body = {
            "fix": row["fix"],
            "scope": row["scope"],
            "verdict": verdict.verdict,
            "reasons": [x[:256] for x in verdict.reasons[:16]],
            "evidence": verdict.evidence,
        }
        await self._write("fix.attest", body)
        self._judged.add(row["fix"])
        self.stats.checked += 1
        if verdict.accept:
            self.stats.accepted += 1
        else:
            self.stats.rejected += 1
        log.info(
            "%sed fix %s: %s", verdict.verdict, row["fix"].hex()[:12], "; ".join(verdict.reasons)
        )
        return verdict.verdict

    def _can_revoke(self, scope: str) -> bool:
        """A machine verifier of the revoking tier. Tier 3 (a person) and admins act
        by hand (``gossipmind revoke-fix``), never automatically."""
        tier = self.replica.roles(self.key).tier_for(scope)
        return self.replica.policy.revoke_min_tier <= tier < 3

    async def watch_outcomes(self, fids: Iterable[bytes] | None = None) -> int:
        """Revoke accepted fixes whose fleet outcomes show they stopped working,
        among ``fids`` (None: every fix). A write that fails raises; that fix and
        those not looked at yet are read again at the next pass."""
        revoked = 0
        fixes = self.replica.fold.fixes
        todo = list(fixes) if fids is None else sorted(fids)
        for i, fid in enumerate(todo):
            f = fixes.get(fid)
            row = fix_row(self.replica, f) if f is not None else None
            if row is None or row["status"] != "accepted" or not self._can_revoke(row["scope"]):
                continue
            state, why, _ = fleet_evidence(row, self.replica.policy)
            if state != "bad":
                continue
            try:
                await self._write(
                    "fix.revoke",
                    {
                        "fix": row["fix"],
                        "scope": row["scope"],
                        "reason": f"outcomes turned bad: {why}"[:512],
                    },
                )
            except GossipmindError:
                self._retry.update(todo[i:])
                raise
            self.stats.revoked += 1
            revoked += 1
            log.info("revoked fix %s: %s", row["fix"].hex()[:12], why)
        return revoked

    async def tick(self) -> bool:
        """One pass: judge what waits, then watch outcomes, over the fixes that can
        have changed since the last pass (:meth:`due`) — none when the replica
        did not change and no write failed. Whether it read any fix."""
        if self.equivocating or self.key in self.replica.membership.equivocators:
            # every write would be refused (Replica.create: equivocating), for good:
            # trying again each tick judged and logged every waiting fix, forever
            if not self.equivocating:
                log.warning(
                    "this node's key equivocated: the verifier attests and revokes "
                    "nothing more (give the host a new key: operations.md section 9)"
                )
            self.equivocating = True
            return False
        mark = (len(self.replica.meta), self.replica.recomputes)
        if mark == self._seen and not self._retry:
            return False
        self._seen = mark
        fids = self.due()
        if fids is not None and not fids:
            return False
        self.passes += 1
        for row in self.pending(fids):
            try:
                verdict = await self.judge(row)
            except GossipmindError as exc:
                log.warning("could not attest fix %s: %s", row["fix"].hex()[:12], exc)
                self._retry.add(row["fix"])
                continue
            except Exception:  # a bug, or data we failed to anticipate: skip the fix
                # (until restart) rather than let one fix stop the verifier
                log.exception("failed judging fix %s; skipped", row["fix"].hex()[:12])
                self.stats.errors += 1
                self._judged.add(row["fix"])
                continue
            if verdict == "wait":
                self._judged.discard(row["fix"])
            await trio.lowlevel.checkpoint()
        try:
            await self.watch_outcomes(fids)
        except GossipmindError as exc:
            log.warning("could not revoke a fix: %s", exc)
        return True

    async def run(self) -> None:
        """Every ``tick_s``, :meth:`tick`: a pass over the fixes whose row can have
        changed. Every pass read every fix, twice: with 20 000 fixes, ~30 % of a
        core and loop stalls of 1.7 s, idle or under any steady flow of ops."""
        while True:
            await trio.sleep(self.tick_s)
            await self.tick()
