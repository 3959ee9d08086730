"""Membership pasts as bit masks (core/membership.py): the same roles as a view
built from the explicit causal past, and memory that grows linearly."""

from __future__ import annotations

import tracemalloc

from gossipmind.core.membership import Roles
from gossipmind.core.replica import MEMBERSHIP_KINDS, Replica
from gossipmind.testing import KB, History


def causal_membership_past(r: Replica, op_id: bytes) -> set[bytes]:
    """The membership ops in ``op_id``'s causal past, by walking deps."""
    seen: set[bytes] = set()
    stack = list(r.meta[op_id].deps)
    while stack:
        d = stack.pop()
        if d not in seen:
            seen.add(d)
            stack.extend(r.meta[d].deps)
    return {d for d in seen if r.meta[d].kind in MEMBERSHIP_KINDS}


def reference_roles(r: Replica, ids: set[bytes], key: bytes, effective: bool) -> Roles:
    """protocol.md §6.1's view of a set, built the plain way."""
    m = r.membership
    out = Roles()
    for rv in m.revokes.values():
        counts = not effective or rv.op_id in m.effective_revokes
        if rv.op_id in ids and rv.member == key and counts:
            return Roles(revoked=True)
    for g in m.grants.values():
        if g.op_id in ids and g.member == key and (not effective or g.op_id in m.effective_grants):
            out.roles.add(g.role)
            if g.role == "verifier":
                out.verifier.extend((g.tier, s) for s in g.scopes)
    return out


def same(a: Roles, b: Roles) -> bool:
    return (a.roles, sorted(a.verifier), a.revoked) == (b.roles, sorted(b.verifier), b.revoked)


def test_masks_hold_exactly_the_causal_membership_past_and_give_the_same_roles() -> None:
    for seed in range(6):
        h = History(seed, steps=90)
        r = Replica(h.kb.genesis)
        for op in h.kb.ops[1:]:
            r.ingest(op)
        m = r.membership
        by_bit = {g.bit: g.op_id for g in m.grants.values()}
        by_bit.update({rv.bit: rv.op_id for rv in m.revokes.values()})
        keys = {meta.author for meta in r.meta.values()} | {g.member for g in m.grants.values()}
        checked = 0
        for op_id, meta in r.meta.items():
            if op_id == r.net:
                continue
            mask = r.msets[meta.mset]
            ids = {by_bit[b] for b in range(mask.bit_length()) if (mask >> b) & 1}
            assert ids == causal_membership_past(r, op_id)
            for key in keys:
                for effective in (False, True):
                    got = m.roles(mask, key, effective=effective)
                    assert same(got, reference_roles(r, ids, key, effective))
                    checked += 1
        assert checked > 500


def test_memory_grows_linearly_with_members() -> None:
    """1 500 grants in sequence: each past is one bigger than the last. Held as
    frozensets with a view each, that took ~300 MiB; as masks, a few MiB."""
    kb = KB()
    for i in range(1500):
        kb.grant("admin", f"m{i}", "member")
    for i in range(10):
        kb.revoke("admin", f"m{i}", retroactive=i % 2 == 0)
    tracemalloc.start()
    try:
        r = Replica(kb.genesis)
        for op in kb.ops[1:]:
            r.ingest(op, verified=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(r.membership.effective_revokes) == 10
    assert peak < 32 * 2**20, peak / 2**20
