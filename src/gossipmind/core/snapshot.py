"""Materialised state as plain data: what the store persists and the CLI shows.

Every function here is deterministic in the set of valid ops; two replicas
holding the same ops produce equal snapshots (property-tested).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gossipmind.core import encoding
from gossipmind.core.fold import FixAgg, PatternAgg, goal_status, weighted_outcomes

if TYPE_CHECKING:
    from gossipmind.core.replica import Replica

# Every status a fix row can have (docs/protocol.md §6.5): blocked = breaks an
# active goal; unproposed = attested or reported on, but no proposal known yet.
FIX_STATUSES = ("proposed", "accepted", "rejected", "blocked", "revoked", "unproposed")
# The largest integer a row holds (SQLite's INTEGER; protocol.md §6.4): sums over
# any number of ops, and figures derived from them, saturate there rather than
# overflow the encoding (2^64 - 1) or a column when the row is written.
ROW_INT_MAX = 2**63 - 1
# A row holds an attestation's evidence map one level deeper than its op did
# (row > attestations > attestation > evidence, against op > body > evidence):
# evidence nesting this many levels (itself included) or fewer fits as it is.
EVIDENCE_DEPTH = encoding.MAX_DEPTH - 3


def sat(n: int) -> int:
    """``n``, or :data:`ROW_INT_MAX` if it is larger."""
    return n if n <= ROW_INT_MAX else ROW_INT_MAX


def depth(value: Any) -> int:
    """Nesting levels of ``value`` as protocol.md §2 counts them (containers only)."""
    if type(value) is dict:
        return 1 + max(map(depth, value.values()), default=0)
    if type(value) is list:
        return 1 + max(map(depth, value), default=0)
    return 0


def row_evidence(evidence: dict[str, Any]) -> dict[str, Any] | bytes:
    """An attestation's evidence as its fix row holds it: the map itself, or its
    canonical encoding (bin) when it nests too deep for the row (protocol.md §6.5)."""
    return evidence if depth(evidence) <= EVIDENCE_DEPTH else encoding.encode(evidence)


def member_rows(r: Replica) -> list[dict[str, Any]]:
    ms = r.membership
    keys: dict[bytes, dict[str, Any]] = {}

    def row(key: bytes) -> dict[str, Any]:
        return keys.setdefault(
            key,
            {
                "key": key,
                "name": "",
                "roles": set(),
                "verifier": set(),
                "revoked": "",
                "equivocating": key in ms.equivocators,
                "void_after": ms.void_after.get(key),
            },
        )

    for g in sorted(ms.grants.values(), key=lambda g: (g.lamport, g.op_id)):
        if g.op_id not in ms.effective_grants:
            continue
        m = row(g.member)
        m["roles"].add(g.role)
        m["verifier"].update((g.tier, s) for s in g.scopes)
        m["name"] = g.name or m["name"]
    for rv in ms.revokes.values():
        if rv.op_id in ms.effective_revokes:
            m = row(rv.member)
            kind = "retroactive" if rv.retroactive else "plain"
            m["revoked"] = "retroactive" if "retroactive" in (m["revoked"], kind) else kind
    for key in ms.equivocators:
        row(key)
    out = []
    for key in sorted(keys):
        m = keys[key]
        m["roles"] = sorted(m["roles"])
        m["verifier"] = [[t, s] for t, s in sorted(m["verifier"])]
        out.append(m)
    return out


def pattern_row(p: PatternAgg, threshold: int) -> dict[str, Any]:
    count, lat_sum, lat_n, ra_max, ra_n, reporters = p.totals()
    lat_typical, ra_typical = p.typical()
    return {
        "pattern": p.pattern,
        "service": p.service,
        "operation": p.operation,
        "error_class": p.error_class,
        "template": p.template,
        "shape": p.shape,
        "count": sat(count),
        "reporters": reporters,
        "over_threshold": reporters >= threshold,
        "latency_ms_avg": sat(lat_sum // lat_n) if lat_n else 0,
        "latency_n": sat(lat_n),
        "retry_after_ms_max": ra_max,
        "retry_after_n": sat(ra_n),
        # what synthesis and drills use: medians over the authors (PatternAgg.typical)
        "latency_ms_typical": sat(lat_typical),
        "retry_after_ms_typical": ra_typical,
        "status": {code: sat(n) for code, n in sorted(p.status.items())},
        "first_ts": p.first_ts,
        "last_ts": p.last_ts,
    }


def pattern_rows(r: Replica) -> list[dict[str, Any]]:
    t = r.policy.synthesis_threshold
    return [pattern_row(r.fold.patterns[k], t) for k in sorted(r.fold.patterns)]


def fix_row(r: Replica, f: FixAgg) -> dict[str, Any] | None:
    v = r.fold.fix_view(f)
    if v.recipe is None:
        return None
    st = r.fold.fix_status(v)
    attempts, successes = weighted_outcomes(v.outcomes.values())
    first = v.first_proposal or {}
    return {
        "fix": v.fix,
        "pattern": v.pattern,
        "scope": v.scope,
        "pattern_scope": r.fold.scope_of_pattern(v) or "",
        "recipe": v.recipe,
        "status": st["status"] if v.proposals else "unproposed",
        "risk": st["risk"],
        "quorum": st.get("quorum"),
        "accepts": [[a, t] for a, t in st["accepts"]],
        "rejects": [[a, t] for a, t in st["rejects"]],
        "violations": st["violations"],
        "attestations": [
            {
                "verifier": a,
                "verdict": x.verdict,
                "tier": x.tier,
                "reasons": x.reasons,
                "evidence": row_evidence(x.evidence),
                "op": x.op_id,
            }
            for a, x in sorted(v.attestations.items())
        ],
        "proposers": sorted(v.proposals),
        "rationale": first.get("rationale", ""),
        "origin": first.get("origin", ""),
        "synthesizer": first.get("synthesizer", ""),
        "drill": first.get("drill"),
        "proposed_ts": first.get("ts", 0),
        "revocations": [
            {"by": x["author"], "reason": x["reason"]}
            for _, x in sorted(v.revokes.items(), key=lambda kv: (kv[1]["lamport"], kv[0]))
        ],
        "attempts": sat(attempts),
        "successes": sat(successes),
        "outcome_reporters": sum(1 for o in v.outcomes.values() if o[0] > 0),
        "outcomes": [[a, sat(o[0]), sat(o[1])] for a, o in sorted(v.outcomes.items())],
    }


def fix_rows(r: Replica) -> list[dict[str, Any]]:
    rows = [fix_row(r, r.fold.fixes[k]) for k in sorted(r.fold.fixes)]
    return [x for x in rows if x is not None]


def goal_rows(r: Replica) -> list[dict[str, Any]]:
    out = []
    for gid in sorted(r.fold.goals):
        g = r.fold.goals[gid]
        st = goal_status(g)
        if st is None:
            continue
        body = st["body"]
        out.append(
            {
                "goal": gid,
                "owner": g.owner,
                "version": st["version"],
                "title": body["title"],
                "description": body.get("description", ""),
                "scope": body["scope"],
                "constraints": body["constraints"],
                "priority": body["priority"],
                "retired": body["retired"],
                "active": st["active"],
                "approvals": st["approvals"],
                "rejections": st["rejections"],
            }
        )
    return out


def conflict_rows(r: Replica) -> list[dict[str, Any]]:
    _, resolution = r.fold.active_goals()
    return [
        {"a": c.a, "b": c.b, "scope": c.scope, "reason": c.reason, "winner": c.winner}
        for c in resolution.conflicts
    ]


def snapshot(r: Replica) -> dict[str, Any]:
    """All materialised state, for equality checks across replicas."""
    return {
        "root": r.root(),
        "members": member_rows(r),
        "patterns": pattern_rows(r),
        "fixes": fix_rows(r),
        "goals": goal_rows(r),
        "conflicts": conflict_rows(r),
        # copies: the replica adds forks to its lists in place
        "equivocations": sorted([a, s, list(ids)] for (a, s), ids in r.equivocations.items()),
    }
