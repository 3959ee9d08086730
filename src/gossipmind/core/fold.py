"""The fold: materialised state as a pure function of the set of valid ops.

Aggregates are updated incrementally as effective ops are applied; when a
revocation or an equivocation changes which ops are effective, the replica calls
:meth:`Fold.rebuild` and every aggregate is recomputed from the op records.
Every derived value is a function of the set, never of arrival order
(docs/protocol.md §6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gossipmind.core import encoding
from gossipmind.core.goals import Goal, Resolution, resolve
from gossipmind.core.goals import violations as goal_violations
from gossipmind.core.membership import Roles
from gossipmind.core.policy import Policy, max_risk, scope_covers
from gossipmind.core.records import Records
from gossipmind.core.schema import fix_id as compute_fix_id


@dataclass(slots=True)
class Meta:
    """What a replica keeps in memory about every valid op."""

    id: bytes
    author: bytes
    seq: int
    lamport: int
    kind: str
    deps: tuple[bytes, ...]
    ts: int
    mset: int  # interned set of membership ops in this op's causal past
    effective: bool = False


@dataclass(slots=True)
class PatternAgg:
    pattern: bytes
    service: str
    operation: str
    error_class: str
    template: str
    shape: str
    first: tuple[int, bytes]
    per_author: dict[bytes, list[int]] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    first_ts: int = 0
    last_ts: int = 0

    @property
    def count(self) -> int:
        return sum(v[0] for v in self.per_author.values())

    @property
    def reporters(self) -> int:
        return sum(1 for v in self.per_author.values() if v[0] > 0)

    def typical(self) -> tuple[int, int]:
        """The lower median, over the authors with samples, of each author's mean
        latency and of each author's largest Retry-After (0 without samples).

        The fleet's average and maximum are one author's to set: a single report
        with a huge ``latency_ms_sum`` or ``retry_after_ms_max`` outweighs every
        other. Once three authors or more have samples, one author cannot move a
        median out of the range of the others' values.
        """
        lats = sorted(v[1] // v[2] for v in self.per_author.values() if v[0] > 0 and v[2] > 0)
        ras = sorted(v[3] for v in self.per_author.values() if v[0] > 0 and v[4] > 0)
        return (
            lats[(len(lats) - 1) // 2] if lats else 0,
            ras[(len(ras) - 1) // 2] if ras else 0,
        )

    def totals(self) -> tuple[int, int, int, int, int, int]:
        """count, latency sum, latency samples, max Retry-After, its samples, and
        reporters (authors with a count), in one pass over the authors."""
        count = lat_sum = lat_n = ra_max = ra_n = reporters = 0
        for c, ls, ln, rm, rn in self.per_author.values():
            count += c
            lat_sum += ls
            lat_n += ln
            ra_max = max(ra_max, rm)
            ra_n += rn
            if c > 0:
                reporters += 1
        return count, lat_sum, lat_n, ra_max, ra_n, reporters


@dataclass(slots=True)
class Attestation:
    op_id: bytes
    lamport: int
    verdict: str
    scope: str
    roles: Roles  # the attester's effective roles in the attestation's causal past
    reasons: list[str]
    evidence: dict[str, Any]
    tier: int = 0  # filled in by Fold.fix_view for the fix's scope


@dataclass(slots=True)
class FixAgg:
    """A fix's aggregates. Its effective proposals are kept as running values, so
    that reading its status or row costs the same however often one member
    re-proposes it: ``proposals`` holds one entry per proposer (its proposal with
    the smallest (lamport, id)), ``first`` the fix's first effective proposal and
    ``declared`` the highest risk any effective proposal declared."""

    fix: bytes
    pattern: bytes = b""
    recipe: dict[str, Any] | None = None
    first: tuple[int, bytes] | None = None
    proposals: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    attestations: dict[bytes, Attestation] = field(default_factory=dict)
    revokes: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[bytes, list[int]] = field(default_factory=dict)
    first_proposal: dict[str, Any] | None = None
    declared: str = "low"

    @property
    def scope(self) -> str:
        return str(self.recipe["scope"]) if self.recipe else ""

    def propose(self, meta: Meta, body: dict[str, Any]) -> None:
        """Count an effective ``fix.propose`` of this fix (O(1))."""
        self.declared = max_risk(self.declared, body["risk"])
        key = (meta.lamport, meta.id)
        mine = self.proposals.get(meta.author)
        if mine is not None and mine["key"] <= key:
            return
        p = {
            "key": key,
            "author": meta.author,
            "risk": body["risk"],
            "origin": body["origin"],
            "rationale": body["rationale"],
            "drill": body.get("drill"),
            "synthesizer": body.get("synthesizer", ""),
            "lamport": meta.lamport,
            "ts": meta.ts,
        }
        self.proposals[meta.author] = p
        if self.first_proposal is None or key < self.first_proposal["key"]:
            self.first_proposal = p

    def clear_counts(self) -> None:
        self.proposals.clear()
        self.attestations.clear()
        self.revokes.clear()
        self.outcomes.clear()
        self.first_proposal, self.declared = None, "low"


@dataclass(slots=True)
class GoalAgg:
    goal: bytes
    owner: bytes = b""
    versions: dict[bytes, tuple[int, bytes, dict[str, Any]]] = field(default_factory=dict)
    reviews: dict[bytes, dict[bytes, tuple[int, bytes, str, str]]] = field(default_factory=dict)


NO_GOALS: tuple[list[Goal], Resolution] = ([], Resolution())
# The most attempts one author's outcomes weigh in a fix's success rate (protocol.md
# §6.5): an author's counters count as at most this many calls at its own rate.
OUTCOME_CAP = 100
SCOPE_MAX = 64  # the longest scope (a name, protocol.md §4)


def pattern_scope(service: str, operation: str) -> str:
    """The scope a fix for a pattern must have: ``service.operation``, or, when that
    is longer than a scope may be, its longest prefix that ends before a ``.`` and
    is at most 64 characters long (protocol.md §6.5).

    Every scope that covers ``service.operation`` also covers that prefix, so a
    goal or risk floor on ``payments.charge`` still holds a fix for
    ``payments.charge.<a long operation>``. ``service`` is at most 64
    characters, so the prefix is never shorter than ``service``. A report whose
    service or operation is the wildcard ``*`` names no calls: ``""`` (undefined).
    """
    if "*" in (service, operation):
        return ""  # a wildcard names no calls: undefined, so no fix for it is accepted
    both = f"{service}.{operation}"
    return both if len(both) <= SCOPE_MAX else both[: SCOPE_MAX + 1].rsplit(".", 1)[0]


def weighted_outcomes(outcomes: Iterable[Sequence[int]]) -> tuple[int, int]:
    """(attempts, successes) of a fix with each author's weight capped (protocol.md §6.5).

    ``outcomes`` holds each author's raw (attempts, successes). An author with
    more than :data:`OUTCOME_CAP` attempts counts as ``OUTCOME_CAP`` attempts
    at its own success rate, rounded down: one key cannot outweigh the others.
    """
    attempts = successes = 0
    for a, s in outcomes:
        if a <= 0:
            continue
        w = min(a, OUTCOME_CAP)
        attempts += w
        successes += s * w // a
    return attempts, successes


def goal_effect(
    recipe: dict[str, Any], goals: tuple[list[Goal], Resolution]
) -> tuple[bool, list[tuple[bytes, str]]]:
    """All that :func:`fix_status` reads of the goals for a fix with ``recipe``:
    whether a tier-3 scope covers its scope, and its violations (protocol.md §6.5).

    Two goal states that give a recipe the same effect give its fix the same
    status and row; :meth:`Fold.fixes_goals_change` relies on it.
    """
    active, resolution = goals
    return resolution.needs_tier3(recipe["scope"]), goal_violations(recipe, active, resolution)


def changed_goal_scopes(
    old: tuple[list[Goal], Resolution], new: tuple[list[Goal], Resolution]
) -> list[str]:
    """The scopes (before and after) of the active goals that differ between ``old``
    and ``new``: the only scopes whose fixes the change can reach.

    A goal covering scope S counts for S's fixes; the constraints dropped for S
    and the tier-3 scopes covering S come from conflicts, each a function of one
    pair of goals (:func:`~gossipmind.core.goals.resolve`) placed in the overlap
    of the two scopes, which both cover. So a pair that changed holds a changed
    goal D, and what it drops or marks lies within D's scope; scopes nest
    (covering is transitive), so only a fix whose scope D's covers can see it.
    """
    before = {g.id: g for g in old[0]}
    after = {g.id: g for g in new[0]}
    out: set[str] = set()
    for gid in before.keys() | after.keys():
        a, b = before.get(gid), after.get(gid)
        if a != b:
            out.update(g.scope for g in (a, b) if g is not None)
    return sorted(out)


def fix_status(
    f: FixAgg,
    policy: Policy,
    goals: tuple[list[Goal], Resolution] = NO_GOALS,
    *,
    pattern: str | None,
) -> dict[str, Any]:
    """Derived status of a fix: risk, quorum, goals, verdict (protocol §6.5).

    ``pattern`` is the scope the fix's pattern gives it (:func:`pattern_scope`), or
    None while no report of the pattern is known: such a fix is never accepted,
    and one whose recipe names another scope is ``rejected`` whatever the verdicts.
    """
    if f.recipe is None or not f.proposals:
        return {"status": "unknown", "risk": "low", "accepts": [], "rejects": [], "violations": []}
    risk = max_risk(policy.risk_floor(f.recipe), f.declared)
    quorum = policy.quorum[risk]
    tier3, broken = goal_effect(f.recipe, goals)
    tier_needed = max(quorum.tier, 3) if tier3 else quorum.tier
    accepts = {a: x.tier for a, x in f.attestations.items() if x.verdict == "accept"}
    rejects = {a: x.tier for a, x in f.attestations.items() if x.verdict == "reject"}
    top = max(accepts.values(), default=0)
    met = len(accepts) >= quorum.count and top >= tier_needed
    blocked = any(t >= top for t in rejects.values())
    if f.revokes:
        status = "revoked"
    elif pattern is not None and pattern != f.recipe["scope"]:
        status = "rejected"  # the recipe is for another scope than the calls it would fix
    elif broken:
        status = "blocked"
    elif met and not blocked and pattern is not None:
        status = "accepted"
    elif rejects:
        status = "rejected"
    else:
        status = "proposed"
    return {
        "status": status,
        "risk": risk,
        "quorum": {"count": quorum.count, "tier": tier_needed},
        "accepts": sorted(accepts.items()),
        "rejects": sorted(rejects.items()),
        "violations": [[g, why] for g, why in broken],
    }


def goal_status(g: GoalAgg) -> dict[str, Any] | None:
    """The current version of a goal and whether it is active (protocol §6.6)."""
    own = [(lam, vid, b) for vid, (lam, author, b) in g.versions.items() if author == g.owner]
    if not g.owner or not own:
        return None
    lamport, version, body = max(own, key=lambda v: (v[0], v[1]))
    verdicts = {
        reviewer: verdict
        for reviewer, (_, _, verdict, _) in g.reviews.get(version, {}).items()
        if reviewer != g.owner
    }
    approved = "approve" in verdicts.values() and "reject" not in verdicts.values()
    return {
        "version": version,
        "lamport": lamport,
        "body": body,
        "active": approved and not body["retired"],
        "approvals": sorted(r for r, v in verdicts.items() if v == "approve"),
        "rejections": sorted(r for r, v in verdicts.items() if v == "reject"),
    }


_BODY = 8  # the body's place in an op's envelope (protocol.md §3)


def record_body(raw: bytes) -> dict[str, Any]:
    """The body of a recorded op, from its bytes. Records keep an op's bytes, not
    its decoded body: a decoded report body held ~1.1 KB, twice its bytes, and
    was half the memory of a held op. Decoding one again costs ~1.5 µs."""
    body: dict[str, Any] = encoding.decode_checked_before(raw)[_BODY]
    return body


class Fold:
    """Aggregates of the effective ops. ``records`` lets a rebuild start over:
    each valid non-membership op as (meta, its bytes, roles of its author);
    :func:`record_body` gives its body."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.records = Records()
        self.patterns: dict[bytes, PatternAgg] = {}
        self.fixes: dict[bytes, FixAgg] = {}
        self.fixes_of: dict[bytes, set[bytes]] = {}  # pattern -> ids of its proposed fixes
        self.fixes_in: dict[str, set[bytes]] = {}  # recipe scope -> ids of its proposed fixes
        self.goals: dict[bytes, GoalAgg] = {}
        self.dirty_patterns: set[bytes] = set()
        self.dirty_fixes: set[bytes] = set()
        self.dirty_goals: set[bytes] = set()
        self.all_dirty = True
        self._goals_version = 0
        self._resolved: tuple[int, tuple[list[Goal], Resolution]] | None = None
        # the goal state as of the last drain_dirty: the one the rows were written with
        self._goals_drained: tuple[list[Goal], Resolution] | None = None

    def add(self, meta: Meta, body: dict[str, Any], roles: Roles, raw: bytes) -> None:
        """Record a valid non-membership op (``body`` decoded from ``raw``, its
        bytes); count it if ``meta.effective``."""
        if meta.kind == "pattern.report":
            self._pattern_info(meta, body)
        elif meta.kind == "fix.propose":
            self._fix_info(meta, body)
        elif meta.kind == "goal.set" and "goal" not in body:
            self.goals.setdefault(meta.id, GoalAgg(meta.id)).owner = meta.author
            self.dirty_goals.add(meta.id)
            self._goals_version += 1  # the owner is part of the goal's status
        self.records.append((meta, raw, roles))
        if meta.effective:
            self._count(meta, body, roles)

    def rebuild(self, effective: Callable[[Meta, dict[str, Any]], tuple[bool, Roles]]) -> None:
        """Recompute every aggregate after effectiveness changed."""
        for p in self.patterns.values():
            p.per_author.clear()
            p.status.clear()
            p.first_ts = p.last_ts = 0
        for f in self.fixes.values():
            f.clear_counts()
        for g in self.goals.values():
            g.versions.clear()
            g.reviews.clear()
        self._goals_version += 1

        def reassess(meta: Meta, raw: bytes) -> Roles:
            body = record_body(raw)
            meta.effective, roles = effective(meta, body)
            if meta.effective:
                self._count(meta, body, roles)
            return roles

        self.records.reassess(reassess)  # in the order the ops were applied, as before
        self.all_dirty = True

    # -- per-kind contributions ------------------------------------------------

    def _pattern_info(self, meta: Meta, body: dict[str, Any]) -> None:
        key = (meta.lamport, meta.id)
        p = self.patterns.get(body["pattern"])
        if p is None or key < p.first:
            info = PatternAgg(
                body["pattern"],
                body["service"],
                body["operation"],
                body["error_class"],
                body["template"],
                body["shape"],
                key,
            )
            if p is not None:
                info.per_author, info.status = p.per_author, p.status
                info.first_ts, info.last_ts = p.first_ts, p.last_ts
            else:  # its fixes' pattern scope is known now (protocol.md §6.5)
                self.dirty_fixes.update(self.fixes_of.get(info.pattern, ()))
            self.patterns[body["pattern"]] = info
            self.dirty_patterns.add(info.pattern)

    def _fix_info(self, meta: Meta, body: dict[str, Any]) -> None:
        fid = compute_fix_id(body["pattern"], body["recipe"])
        f = self.fixes.setdefault(fid, FixAgg(fid))
        key = (meta.lamport, meta.id)
        if f.first is None or key < f.first:
            f.first, f.pattern, f.recipe = key, body["pattern"], body["recipe"]
        self.fixes_of.setdefault(f.pattern, set()).add(fid)
        self.fixes_in.setdefault(f.scope, set()).add(fid)  # its id fixes its scope
        self.dirty_fixes.add(fid)

    def _count(self, meta: Meta, body: dict[str, Any], roles: Roles) -> None:
        kind = meta.kind
        if kind == "pattern.report":
            self._count_report(meta, body)
        elif kind == "fix.propose":
            fid = compute_fix_id(body["pattern"], body["recipe"])
            self.fixes[fid].propose(meta, body)
            self.dirty_fixes.add(fid)
        elif kind == "fix.attest":
            self._count_attest(meta, body, roles)
        elif kind == "fix.outcome":
            f = self.fixes.setdefault(body["fix"], FixAgg(body["fix"]))
            o = f.outcomes.setdefault(meta.author, [0, 0])
            o[0] += body["attempts"]
            o[1] += body["successes"]
            self.dirty_fixes.add(body["fix"])
        elif kind == "fix.revoke":
            f = self.fixes.setdefault(body["fix"], FixAgg(body["fix"]))
            f.revokes[meta.id] = {
                "author": meta.author,
                "scope": body["scope"],
                "reason": body["reason"],
                "lamport": meta.lamport,
            }
            self.dirty_fixes.add(body["fix"])
        elif kind == "goal.set":
            self._goals_version += 1
            gid = body.get("goal", meta.id)
            g = self.goals.setdefault(gid, GoalAgg(gid))
            g.versions[meta.id] = (meta.lamport, meta.author, body)
            self.dirty_goals.add(gid)
        elif kind == "goal.review":
            self._goals_version += 1
            g = self.goals.setdefault(body["goal"], GoalAgg(body["goal"]))
            per = g.reviews.setdefault(body["version"], {})
            prev = per.get(meta.author)
            if prev is None or (meta.lamport, meta.id) > (prev[0], prev[1]):
                per[meta.author] = (meta.lamport, meta.id, body["verdict"], body["comment"])
            self.dirty_goals.add(body["goal"])

    def _count_report(self, meta: Meta, body: dict[str, Any]) -> None:
        p = self.patterns[body["pattern"]]
        stats = body["stats"]
        first = not p.per_author  # the pattern's first counted report (ts 0 is a time too)
        v = p.per_author.setdefault(meta.author, [0, 0, 0, 0, 0])
        v[0] += min(body["count"], self.policy.report_cap)
        v[1] += stats["latency_ms_sum"]
        v[2] += stats["latency_n"]
        v[3] = max(v[3], stats["retry_after_ms_max"])
        v[4] += stats["retry_after_n"]
        for code, n in stats["status"].items():
            p.status[code] = p.status.get(code, 0) + n
        p.first_ts = meta.ts if first else min(p.first_ts, meta.ts)
        p.last_ts = max(p.last_ts, meta.ts)
        self.dirty_patterns.add(p.pattern)

    def _count_attest(self, meta: Meta, body: dict[str, Any], roles: Roles) -> None:
        f = self.fixes.setdefault(body["fix"], FixAgg(body["fix"]))
        prev = f.attestations.get(meta.author)
        if prev is not None and (prev.lamport, prev.op_id) > (meta.lamport, meta.id):
            return
        f.attestations[meta.author] = Attestation(
            meta.id,
            meta.lamport,
            body["verdict"],
            body["scope"],
            roles,
            list(body["reasons"]),
            dict(body.get("evidence", {})),
        )
        self.dirty_fixes.add(body["fix"])

    # -- queries ---------------------------------------------------------------

    def fix_view(self, f: FixAgg) -> FixAgg:
        """``f`` keeping only attestations and revokes whose scope covers the fix,
        each attestation carrying the attester's tier for the fix's scope."""
        if f.recipe is None:
            return f
        attestations = {}
        for author, x in f.attestations.items():
            if scope_covers(x.scope, f.scope):
                tier = x.roles.tier_for(f.scope)
                attestations[author] = Attestation(
                    x.op_id, x.lamport, x.verdict, x.scope, x.roles, x.reasons, x.evidence, tier
                )
        return FixAgg(
            f.fix,
            f.pattern,
            f.recipe,
            f.first,
            f.proposals,
            attestations,
            {k: r for k, r in f.revokes.items() if scope_covers(r["scope"], f.scope)},
            f.outcomes,
            f.first_proposal,
            f.declared,
        )

    def active_goals(self) -> tuple[list[Goal], Resolution]:
        """The active goals and the resolution of their conflicts (cached)."""
        if self._resolved is None or self._resolved[0] != self._goals_version:
            active = []
            for gid in sorted(self.goals):
                st = goal_status(self.goals[gid])
                if st is None or not st["active"]:
                    continue
                body = st["body"]
                active.append(
                    Goal(
                        gid,
                        body["scope"],
                        body["priority"],
                        tuple(body["constraints"]),
                        body["title"],
                    )
                )
            self._resolved = (self._goals_version, (active, resolve(active)))
        return self._resolved[1]

    def scope_of_pattern(self, f: FixAgg) -> str | None:
        """The scope ``f``'s pattern gives it, or None while no report of it is known."""
        p = self.patterns.get(f.pattern) if f.recipe is not None else None
        return pattern_scope(p.service, p.operation) if p is not None else None

    def fix_status(self, f: FixAgg) -> dict[str, Any]:
        """:func:`fix_status` of a fix view, with this fold's policy, goals and patterns."""
        return fix_status(f, self.policy, self.active_goals(), pattern=self.scope_of_pattern(f))

    def iter_fix_status(self) -> Iterator[tuple[FixAgg, dict[str, Any]]]:
        for f in self.fixes.values():
            v = self.fix_view(f)
            yield v, self.fix_status(v)

    def fixes_goals_change(
        self,
        old: tuple[list[Goal], Resolution] | None,
        new: tuple[list[Goal], Resolution],
    ) -> set[bytes]:
        """The fixes whose status going from goal state ``old`` to ``new`` (two
        :meth:`active_goals`; None: unknown) changes: those in a scope a changed
        goal covers (:func:`changed_goal_scopes`) whose :func:`goal_effect`
        differs. A goal op costs the fixes it reaches, not every fix."""
        if old is None:
            return set(self.fixes)
        out: set[bytes] = set()
        scopes = changed_goal_scopes(old, new) if old is not new else []
        if not scopes:
            return out
        for scope, fids in self.fixes_in.items():
            if not any(scope_covers(s, scope) for s in scopes):
                continue
            for fid in fids:
                recipe = self.fixes[fid].recipe
                if recipe is not None and goal_effect(recipe, old) != goal_effect(recipe, new):
                    out.add(fid)
        return out

    def drain_dirty(self) -> tuple[set[bytes], set[bytes], set[bytes], bool]:
        """What changed since the last call: patterns, fixes (including those a goal
        change reaches), goals, and whether everything did."""
        if self.dirty_goals and not self.all_dirty:
            self.dirty_fixes |= self.fixes_goals_change(self._goals_drained, self.active_goals())
        if self.dirty_goals or self.all_dirty or self._goals_drained is None:
            self._goals_drained = self.active_goals()
        out = (self.dirty_patterns, self.dirty_fixes, self.dirty_goals, self.all_dirty)
        self.dirty_patterns, self.dirty_fixes, self.dirty_goals = set(), set(), set()
        self.all_dirty = False
        return out
