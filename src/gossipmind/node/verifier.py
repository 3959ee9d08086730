"""The verifier loop of a node granted the verifier role.

For every proposed fix in one of its scopes that it has not judged yet, it runs
:func:`gossipmind.verify.checks.check_fix` and signs a ``fix.attest`` with the
verdict, the reasons and the evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from gossipmind.core.errors import GossipmindError
from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import fix_row, pattern_row
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
        self._again = False  # a write failed: pass again even if nothing changed
        self.passes = 0  # ticks that looked at the fixes

    def pending(self) -> list[dict[str, Any]]:
        """Fix rows in my scopes that wait for my verdict."""
        roles = self.replica.roles(self.key)
        seen = (sorted(roles.roles), sorted(roles.verifier), roles.revoked)
        if seen != self._roles_seen:
            self._roles_seen = seen
            self._out_of_scope.clear()
        out = []
        for f in self.replica.fold.fixes.values():
            if f.fix in self._judged or f.fix in self._out_of_scope:
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

    async def watch_outcomes(self) -> int:
        """Revoke accepted fixes whose fleet outcomes show they stopped working."""
        revoked = 0
        for f in list(self.replica.fold.fixes.values()):
            row = fix_row(self.replica, f)
            if row is None or row["status"] != "accepted" or not self._can_revoke(row["scope"]):
                continue
            state, why, _ = fleet_evidence(row, self.replica.policy)
            if state != "bad":
                continue
            await self._write(
                "fix.revoke",
                {
                    "fix": row["fix"],
                    "scope": row["scope"],
                    "reason": f"outcomes turned bad: {why}"[:512],
                },
            )
            self.stats.revoked += 1
            revoked += 1
            log.info("revoked fix %s: %s", row["fix"].hex()[:12], why)
        return revoked

    async def run(self) -> None:
        """Every ``tick_s``: judge what waits, then watch outcomes — but only when the
        replica changed since the last pass (or a write failed): an idle tick over
        20 000 fixes read every row, ~30 % of a core and loop stalls of 1.7 s."""
        while True:
            await trio.sleep(self.tick_s)
            mark = (len(self.replica.meta), self.replica.recomputes)
            if mark == self._seen and not self._again:
                continue
            self._seen, self._again = mark, False
            self.passes += 1
            for row in self.pending():
                try:
                    verdict = await self.judge(row)
                except GossipmindError as exc:
                    log.warning("could not attest fix %s: %s", row["fix"].hex()[:12], exc)
                    self._again = True
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
                await self.watch_outcomes()
            except GossipmindError as exc:
                log.warning("could not revoke a fix: %s", exc)
                self._again = True
