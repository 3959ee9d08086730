"""The verifier loop of a node granted the verifier role.

For every proposed fix in one of its scopes that it has not judged yet, it runs
:func:`gossipmind.verify.checks.check_fix` and signs a ``fix.attest`` with the
verdict, the reasons and the evidence; it revokes accepted fixes whose fleet
outcomes turned bad and stay bad. A pass reads only the fixes whose row the ops applied since
the last pass can have changed (:class:`~gossipmind.node.fixes.FixChanges`, fed
by ``Node._applied``), every fix when its roles changed or when ops applied
that it was not told of.

Outcomes are each author's running totals, and during a provider's outage every
call fails whatever the recipe: judged on the totals alone, a 4-minute outage
got the network's own fix revoked within 30 s, for good (the s12 soak). So a
fix whose totals are bad is only suspected; it is revoked once the outcomes of
the last ``revoke_window_s`` (the totals less those of a snapshot at least that
old) have been bad at every look for ``revoke_confirm_s``, the last included. A
window judged good clears the suspicion; one with too few outcomes to judge
neither clears it nor revokes. A window that turns bad after one was judged
still holds the outcomes before it, so that streak is confirmed after
``revoke_window_s + revoke_confirm_s``. An
outage shorter than ``revoke_confirm_s`` revokes nothing; a fix that stopped
working is revoked ``revoke_window_s + revoke_confirm_s`` after it did (the
suspicion is in memory: a restart begins it again).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from gossipmind.core.errors import GossipmindError
from gossipmind.core.ops import Op
from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import fix_row, pattern_row
from gossipmind.node.fixes import FixChanges
from gossipmind.verify.checks import fleet_evidence, judge

log = logging.getLogger("gossipmind.node.verifier")

REVOKE_WINDOW_S = 600.0  # a suspect fix is judged on its outcomes of this long
REVOKE_CONFIRM_S = 600.0  # ... bad at every look for this long before it is revoked

Totals = dict[bytes, tuple[int, int]]  # author -> (attempts, successes) so far


@dataclass
class _Suspect:
    """An accepted fix whose outcome totals are bad: snapshots of its totals, and
    since when its windowed outcomes have been bad (None: not yet, or good since)."""

    snaps: list[tuple[float, Totals]] = field(default_factory=list)
    bad_since: float | None = None
    # a window judged before the bad streak began: that window still holds the
    # outcomes before it, so a streak of bad windows lasts up to window_s longer
    # than what made it bad, and is confirmed after window_s + confirm_s
    looked: bool = False
    lag: float = 0.0

    def window(self, now: float, totals: Totals, window_s: float) -> Totals | None:
        """The totals since the newest snapshot at least ``window_s`` old (None:
        none is that old yet); keeps a snapshot every ``window_s / 20``."""
        if not self.snaps or now - self.snaps[-1][0] >= window_s / 20:
            self.snaps.append((now, totals))
        old = [i for i, (t, _) in enumerate(self.snaps) if t <= now - window_s]
        if not old:
            return None
        del self.snaps[: old[-1]]  # older ones are never the base again
        base = self.snaps[0][1]
        out: Totals = {}
        for author, (a, x) in totals.items():
            a0, x0 = base.get(author, (0, 0))
            if a > a0:
                out[author] = (a - a0, x - x0)
        return out


Write = Callable[[str, dict[str, Any]], Awaitable[object]]


@dataclass
class VerifierStats:
    checked: int = 0
    accepted: int = 0
    rejected: int = 0
    waiting: int = 0
    revoked: int = 0
    out_of_scope: int = 0
    suspected: int = 0  # accepted fixes whose outcome totals are bad, not revoked yet
    errors: int = 0  # fixes skipped because judging them raised (logged with a traceback)


class Verifier:
    def __init__(
        self,
        replica: Replica,
        key: bytes,
        write: Write,
        *,
        tick_s: float = 0.5,
        revoke_window_s: float = REVOKE_WINDOW_S,
        revoke_confirm_s: float = REVOKE_CONFIRM_S,
    ) -> None:
        self.replica = replica
        self.revoke_window_s = revoke_window_s  # 0: revoke on bad totals at once
        self.revoke_confirm_s = revoke_confirm_s
        self._suspects: dict[bytes, _Suspect] = {}
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
                self._suspects.pop(fid, None)
                continue
            state, totals_why, _ = fleet_evidence(row, self.replica.policy)
            why: str | None = totals_why
            if state == "bad" and self.revoke_window_s > 0:
                why = self._confirmed(fid, row)
            else:
                self._suspects.pop(fid, None)
            self.stats.suspected = len(self._suspects)
            if state != "bad" or why is None:
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
            self._suspects.pop(fid, None)
            self.stats.suspected = len(self._suspects)
            self.stats.revoked += 1
            revoked += 1
            log.info("revoked fix %s: %s", row["fix"].hex()[:12], why)
        return revoked

    def _confirmed(self, fid: bytes, row: dict[str, Any]) -> str | None:
        """Why to revoke a fix whose totals are bad, once its windowed outcomes have
        been bad for ``revoke_confirm_s`` (None: not yet)."""
        now = trio.current_time()
        suspect = self._suspects.setdefault(fid, _Suspect())
        raw = row.get("outcomes") or []
        totals = {bytes(o[0]): (int(o[1]), int(o[2])) for o in raw}
        recent = suspect.window(now, totals, self.revoke_window_s)
        if recent is None:
            return None
        outcomes = [[k, a, x] for k, (a, x) in sorted(recent.items())]
        windowed = {**row, "outcomes": outcomes, "outcome_reporters": len(outcomes)}
        state, why, _ = fleet_evidence(windowed, self.replica.policy)
        if state == "good":
            suspect.bad_since = None
        elif state == "bad" and suspect.bad_since is None:
            suspect.bad_since = now
            # a window seen before: this one turned bad, and stays so up to a whole
            # window after a short outage (4 minutes of failures revoked a suspect
            # fix 10 minutes in): confirmed once the window held only later outcomes
            suspect.lag = self.revoke_window_s if suspect.looked else 0.0
        suspect.looked = True
        if state != "bad" or suspect.bad_since is None:
            return None  # revoked on a bad window only: one too thin to judge waits
        if now - suspect.bad_since < suspect.lag + self.revoke_confirm_s:
            return None
        return (
            f"{why} over the last {self.revoke_window_s:.0f} s, for {now - suspect.bad_since:.0f} s"
        )

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
