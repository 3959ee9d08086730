"""Members, roles, tiers, scopes, revocation and equivocation (docs/protocol.md §6.1).

Two views of membership exist:

* the **validity view** of a set of membership ops (the ones in an op's causal
  past): every valid grant counts, every valid revoke strips its target. An op
  is valid only if its author is authorized in the validity view of its past.
* the **effective view**: the same, but only grants that the whole-set fold
  found *effective* count. Grants by voided authors (revoked, equivocating)
  are not effective, and neither is anything those grants authorized.

A set of membership ops (an op's membership past) is a bit mask: each
membership op has a bit, given in the order ops are committed. Roles of a key
in a set are read from the grants and revokes that target that key, so no
whole view is ever built (cost per lookup: the key's own grants and revokes).

Voiding is a per-author seq threshold: an author's op with ``seq >
void_after[author]`` is void. A retroactive revoke or equivocation sets it to
0; a plain revoke R sets it to the highest seq of the author in R's causal past.
A revoke counts only while its author is an admin in the effective view of its
own past (the admin check), found by a fixed point in :meth:`Membership.recompute`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gossipmind.core.errors import InvalidOp
from gossipmind.core.policy import Policy, scope_covers

NEVER = 2**63


@dataclass(slots=True)
class Grant:
    op_id: bytes
    author: bytes
    seq: int
    lamport: int
    member: bytes
    role: str
    tier: int
    scopes: tuple[str, ...]
    name: str
    mset: int  # index of this grant's membership past (Replica.msets)
    bit: int  # this grant's bit in membership-past masks


@dataclass(slots=True)
class Revoke:
    op_id: bytes
    author: bytes
    seq: int
    lamport: int
    member: bytes
    retroactive: bool
    reason: str
    past_seq: int  # highest seq of `member` in this revoke's causal past
    mset: int  # index of this revoke's membership past (as Grant.mset)
    bit: int  # this revoke's bit in membership-past masks


@dataclass(slots=True)
class Roles:
    roles: set[str] = field(default_factory=set)
    verifier: list[tuple[int, str]] = field(default_factory=list)
    revoked: bool = False

    def tier_for(self, scope: str) -> int:
        return max((t for t, s in self.verifier if scope_covers(s, scope)), default=0)

    @property
    def max_tier(self) -> int:
        return max((t for t, _ in self.verifier), default=0)

    def is_member(self, policy: Policy) -> bool:
        return not self.revoked and (bool(self.roles) or policy.open_membership)


_NOBODY = Roles()


def has_bit(mask: int, bit: int) -> bool:
    return (mask >> bit) & 1 == 1


def authorize(kind: str, body: dict[str, Any], roles: Roles, policy: Policy) -> None:
    """Raise InvalidOp unless ``roles`` allow an op of ``kind`` with ``body``."""
    if roles.revoked:
        raise InvalidOp("revoked", "the author's key has been revoked")
    if kind in ("member.grant", "member.revoke"):
        if "admin" not in roles.roles:
            raise InvalidOp("unauthorized", f"{kind} requires the admin role")
        return
    if kind == "fix.attest":
        if not roles.verifier:
            raise InvalidOp("not_verifier", "fix.attest requires the verifier role")
        if roles.tier_for(body["scope"]) < 1:
            raise InvalidOp("out_of_scope", f"the verifier is not granted scope {body['scope']!r}")
        return
    if kind == "fix.revoke":
        if "admin" in roles.roles or roles.tier_for(body["scope"]) >= policy.revoke_min_tier:
            return
        raise InvalidOp(
            "unauthorized",
            f"fix.revoke requires an admin or a tier-{policy.revoke_min_tier} verifier "
            f"for scope {body['scope']!r}",
        )
    if kind == "goal.review":
        if "admin" in roles.roles or roles.max_tier >= policy.goal_review_min_tier:
            return
        raise InvalidOp(
            "unauthorized",
            f"goal.review requires an admin or a tier-{policy.goal_review_min_tier} verifier",
        )
    if kind == "fix.propose" and body.get("origin") == "human":
        if roles.roles & {"teacher", "admin"}:
            return
        raise InvalidOp("unauthorized", "a human-authored fix requires the teacher role")
    if not roles.is_member(policy):
        raise InvalidOp("not_member", f"{kind} requires membership (a member.grant)")


class Membership:
    """All valid membership ops of a replica, and the whole-set effectiveness fold."""

    def __init__(self) -> None:
        self.grants: dict[bytes, Grant] = {}
        self.revokes: dict[bytes, Revoke] = {}
        self.grants_to: dict[bytes, list[Grant]] = {}  # member -> grants naming it
        self.revokes_to: dict[bytes, list[Revoke]] = {}  # member -> revokes naming it
        self.equivocators: set[bytes] = set()
        self.void_after: dict[bytes, int] = {}
        self.effective_grants: set[bytes] = set()
        self.effective_revokes: set[bytes] = set()

    def voided(self, author: bytes, seq: int) -> bool:
        return seq > self.void_after.get(author, NEVER)

    def roles(self, mask: int, key: bytes, *, effective: bool) -> Roles:
        """Roles of ``key`` in the set ``mask``: its grants there, unless a revoke
        there targets it (then none, and revoked). ``effective``: only the
        effective grants and revokes count."""
        for rv in self.revokes_to.get(key, ()):
            if has_bit(mask, rv.bit) and (not effective or rv.op_id in self.effective_revokes):
                return Roles(revoked=True)
        grants = self.grants_to.get(key)
        if not grants:
            return _NOBODY
        out = Roles()
        for g in grants:
            if has_bit(mask, g.bit) and (not effective or g.op_id in self.effective_grants):
                out.roles.add(g.role)
                if g.role == "verifier":
                    out.verifier.extend((g.tier, s) for s in g.scopes)
        return out

    def add_grant(self, g: Grant, past: int, genesis: bool = False) -> None:
        """Record a valid grant; its effectiveness depends only on its past."""
        self.grants[g.op_id] = g
        self.grants_to.setdefault(g.member, []).append(g)
        if genesis or self._grant_effective(g, past):
            self.effective_grants.add(g.op_id)

    def add_revoke(self, rv: Revoke) -> None:
        """Record a valid revoke (the caller then recomputes)."""
        self.revokes[rv.op_id] = rv
        self.revokes_to.setdefault(rv.member, []).append(rv)

    def _grant_effective(self, g: Grant, past: int) -> bool:
        if self.voided(g.author, g.seq):
            return False
        return "admin" in self.roles(past, g.author, effective=True).roles

    def _voided_by_others(self, effective: list[Revoke]) -> set[bytes]:
        """The effective revokes whose author *another* effective revoke (or
        equivocation) voids at their seq. A key's revoke of itself does not void
        that revoke: an owner can revoke its own lost key."""
        bounds: dict[bytes, list[tuple[int, bytes]]] = {}  # target -> (limit, revoke id)
        for rv in effective:
            limit = 0 if rv.retroactive else rv.past_seq
            bounds.setdefault(rv.member, []).append((limit, rv.op_id))
        late = set()
        for rv in effective:
            bound = 0 if rv.author in self.equivocators else NEVER
            for limit, oid in bounds.get(rv.author, ()):
                if oid != rv.op_id:
                    bound = min(bound, limit)
            if rv.seq > bound:
                late.add(rv.op_id)
        return late

    def recompute(self, pasts: Sequence[int], genesis_id: bytes) -> None:
        """Whole-set fold of revocations and grant effectiveness (protocol §6.2-6.3).

        ``pasts`` maps each grant's and revoke's ``mset`` to the mask of the
        membership ops in its past. :meth:`_settle` folds a set of candidate revokes; then every
        effective revoke must pass the admin check: its author has ``admin`` in
        the effective view of its own past (as a grant must). The revokes that
        fail are dropped *tentatively* and the rest settled again; of them, only
        those that still fail are dropped for good (an honest revoke whose
        author's grant a hostile revoke voided passes once the hostile one is
        out). If every one of them passes then, the first of them that
        *defeats itself* is dropped: one that passes once it alone is out (its
        own effect unmakes its author's authority, e.g. an admin revoking its
        own grantor); else the last in the order below, so of two revokes that
        disable each other the first stands. Each round drops at least one
        revoke for good: at most ``len(revokes)`` rounds. Deterministic on the
        set of ops.

        Revokes are taken by seniority first: the author's admin depth (the
        genesis key 0, an admin it granted 1, ...; :meth:`admin_depths`), then
        (lamport, id). So of two admins that revoke each other, the one nearer
        the genesis key wins whatever the lamport times (an author picks its
        deps, so it could sort first by citing few); between equals, the earlier.
        """
        depth = self.admin_depths(self.grants[genesis_id].author)
        unranked = len(depth) + 1  # no valid admin chain: cannot happen for a valid revoke
        order = sorted(
            self.revokes.values(),
            key=lambda r: (depth.get(r.author, unranked), r.lamport, r.op_id),
        )
        dropped: set[bytes] = set()
        while True:
            self._settle([rv for rv in order if rv.op_id not in dropped], pasts, genesis_id)
            failing = [rv for rv in order if rv.op_id in self.effective_revokes]
            failing = [rv for rv in failing if not self.admin_at(rv, pasts)]
            if not failing:
                return
            out = dropped | {rv.op_id for rv in failing}
            self._settle([rv for rv in order if rv.op_id not in out], pasts, genesis_id)
            still = {rv.op_id for rv in failing if not self.admin_at(rv, pasts)}
            if not still:
                admins = [rv for rv in failing if rv.member in depth]
                first = self._self_defeating(order, dropped, admins, pasts, genesis_id)
                still = {first} if first is not None else set()
            dropped |= still or {failing[-1].op_id}

    def _self_defeating(
        self,
        order: list[Revoke],
        dropped: set[bytes],
        failing: list[Revoke],
        pasts: Sequence[int],
        genesis_id: bytes,
    ) -> bytes | None:
        """The first of ``failing`` that passes the admin check once it alone is
        out of the input, if any. Only revokes of admins are tried: a revoke can
        unmake its own author's authority only by voiding an admin on the
        author's chain of grants (a key no admin grant names grants nothing and
        revokes nothing), so this finds the first in revoke order all the same."""
        for rv in failing:
            self._settle(
                [x for x in order if x.op_id not in dropped and x.op_id != rv.op_id],
                pasts,
                genesis_id,
            )
            if self.admin_at(rv, pasts):
                return rv.op_id
        return None

    def admin_depths(self, root: bytes) -> dict[bytes, int]:
        """Each admin's depth: the fewest valid admin grants from ``root`` (the
        genesis key, depth 0) to it, over every valid grant (effective or not, so
        it depends on the set of ops alone)."""
        granted: dict[bytes, list[bytes]] = {}
        for g in self.grants.values():
            if g.role == "admin" and g.member != g.author:
                granted.setdefault(g.author, []).append(g.member)
        depth = {root: 0}
        level = [root]
        while level:
            nxt = []
            for key in level:
                for member in granted.get(key, ()):
                    if member not in depth:
                        depth[member] = depth[key] + 1
                        nxt.append(member)
            level = nxt
        return depth

    def lowers_depth(self, author: bytes, member: bytes, root: bytes) -> bool:
        """Whether a new ``admin`` grant by ``author`` to ``member`` changes some
        key's admin depth (and so the revoke order, §6.2). Depths are shortest
        paths over admin grants: a new edge author -> member shortens some path
        iff it shortens the one to ``member`` (every path using it goes through
        ``member``), i.e. ``member`` had no depth or one above ``author``'s + 1."""
        if member == author:  # a grant to oneself is no edge (admin_depths)
            return False
        depth = self.admin_depths(root)
        if author not in depth:  # cannot happen for a valid grant: it adds no path
            return False
        return member not in depth or depth[member] > depth[author] + 1

    def admin_at(self, rv: Revoke, pasts: Sequence[int]) -> bool:
        """Whether ``rv``'s author is an admin in the effective view of its past."""
        return "admin" in self.roles(pasts[rv.mset], rv.author, effective=True).roles

    def _settle(self, candidates: list[Revoke], pasts: Sequence[int], genesis_id: bytes) -> None:
        """The voiding pass over ``candidates`` (in the order given), then grants.

        A revoke whose author is already void is skipped. A revoke found
        effective whose author a *later* revoke by another key voids is void too
        (a compromised admin's revokes stop counting once it is revoked): it is
        dropped and the pass rerun, until there is none. (A key's revoke of
        itself stands.) Grants are then re-evaluated in (lamport, id) order.
        """
        while True:
            self.void_after = dict.fromkeys(self.equivocators, 0)
            effective: list[Revoke] = []
            for rv in candidates:
                if self.voided(rv.author, rv.seq):
                    continue
                effective.append(rv)
                limit = 0 if rv.retroactive else rv.past_seq
                self.void_after[rv.member] = min(self.void_after.get(rv.member, NEVER), limit)
            late = self._voided_by_others(effective)
            if not late:  # each rerun drops at least one revoke: at most len(revokes) passes
                break
            candidates = [rv for rv in candidates if rv.op_id not in late]
        self.effective_revokes = {rv.op_id for rv in effective}
        self.effective_grants = set()
        for g in sorted(self.grants.values(), key=lambda x: (x.lamport, x.op_id)):
            if g.op_id == genesis_id or self._grant_effective(g, pasts[g.mset]):
                self.effective_grants.add(g.op_id)
