"""Admins granted by other admins (protocol.md §6.2, the admin check on revokes).

A revoke counts only while its author is an admin in the *effective* view of
its causal past, as a grant does (§6.3). So when a compromised admin A granted
B admin and A is retroactively revoked, B's revokes stop counting too, whatever
order they sort or arrive in; an honest admin's revoke that a hostile revoke
voided for a while still counts once the hostile one is gone.
"""

from __future__ import annotations

import itertools
import random

from gossipmind.core.ops import Op
from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import snapshot
from gossipmind.testing import KB, sample_report


def deliver(kb: KB, ops: list[Op]) -> Replica:
    r = Replica(kb.genesis)
    for op in ops:
        r.ingest(op)
    assert not r.pending and not r.rejected
    return r


def orders(ops: list[Op], limit: int = 720, seed: int = 0) -> list[list[Op]]:
    """Every order of ``ops`` when there are at most ``limit``; else ``limit`` random ones."""
    if len(ops) <= 6:
        return [list(p) for p in itertools.permutations(ops)]
    rng = random.Random(seed)
    out = [list(ops), list(reversed(ops))]
    for _ in range(limit - 2):
        shuffled = list(ops)
        rng.shuffle(shuffled)
        out.append(shuffled)
    return out


def roles(r: Replica, kb: KB, name: str) -> list[str]:
    row = next((m for m in snapshot(r)["members"] if m["key"] == kb.key(name)), None)
    return [] if row is None or row["revoked"] else list(row["roles"])


def compromised_a_grants_b(kb: KB) -> None:
    """admin grants A admin; A (compromised) grants B admin; admin writes a few
    ops more, so that its revoke below sorts *after* B's in (lamport, id)."""
    kb.grant("admin", "a", "admin")
    kb.sync("admin", "a")
    kb.grant("a", "b", "admin")
    kb.sync("a", "b")
    for name in ("x", "y", "z"):
        kb.grant("admin", name, "member")


def test_a_derived_admin_cannot_revoke_once_its_grantor_is_retroactively_revoked() -> None:
    kb = KB()
    compromised_a_grants_b(kb)
    honest = kb.revoke("admin", "a", retroactive=True)
    hostile = kb.revoke("b", "admin", retroactive=True)  # concurrent with `honest`
    assert (hostile.lamport, hostile.id) < (honest.lamport, honest.id)  # sorts first
    ops = kb.ops[1:]
    for order in orders(ops, seed=1):
        r = deliver(kb, order)
        m = r.membership
        assert m.effective_revokes == {honest.id}
        assert not m.voided(kb.key("admin"), 10**6)
        assert m.voided(kb.key("a"), 1) and not r.meta[hostile.id].effective
        assert roles(r, kb, "b") == [] and roles(r, kb, "x") == ["member"]
        assert "admin" in r.roles(kb.key("admin")).roles


def test_a_derived_admin_that_saw_the_revoke_cannot_strike_back() -> None:
    """B revokes the admin *after* seeing A revoked: B's grant is void in its own
    past, so B was never an admin when it signed."""
    kb = KB()
    compromised_a_grants_b(kb)
    honest = kb.revoke("admin", "a", retroactive=True)
    kb.sync("admin", "b")
    hostile = kb.revoke("b", "admin", retroactive=True)  # valid: B's grant is valid
    assert honest.id in hostile.deps
    for order in orders(kb.ops[1:], seed=2):
        r = deliver(kb, order)
        assert r.membership.effective_revokes == {honest.id}
        assert not r.membership.voided(kb.key("admin"), 10**6)


def test_an_honest_revoke_voided_for_a_while_by_a_hostile_one_still_counts() -> None:
    """C, an admin the genesis admin granted, revokes a member while B's hostile
    revoke (sorting first) voids the admin, and so C's grant. Once B's revoke is
    out (B's grantor A is retroactively revoked), C's revoke counts again."""
    kb = KB()
    kb.grant("admin", "c", "admin")
    kb.grant("admin", "e", "member")
    kb.sync("admin", "c")
    kb.sync("admin", "e")
    compromised_a_grants_b(kb)
    kb.sync("admin", "c")
    honest = kb.revoke("admin", "a", retroactive=True)
    hostile = kb.revoke("b", "admin", retroactive=True)
    by_c = kb.revoke("c", "e")
    assert (hostile.lamport, hostile.id) < (honest.lamport, honest.id)
    report = kb.write("e", "pattern.report", sample_report(count=2))
    for order in orders(kb.ops[1:], limit=300, seed=3):
        r = deliver(kb, order)
        assert r.membership.effective_revokes == {honest.id, by_c.id}
        assert roles(r, kb, "c") == ["admin"] and roles(r, kb, "e") == []
        assert not r.meta[report.id].effective  # not in c's plain revoke's past


def test_a_plain_revoke_of_the_grantor_leaves_its_derived_admins_their_power() -> None:
    """A retires (a plain revoke): what A signed before stays, so B stays an
    admin and B's revoke counts."""
    kb = KB()
    kb.grant("admin", "a", "admin")
    kb.grant("admin", "e", "member")
    kb.sync("admin", "a")
    kb.grant("a", "b", "admin")
    kb.sync("a", "admin")
    retire = kb.revoke("admin", "a")
    kb.sync("admin", "b")
    by_b = kb.revoke("b", "e", retroactive=True)
    for order in orders(kb.ops[1:], seed=4):
        r = deliver(kb, order)
        assert r.membership.effective_revokes == {retire.id, by_b.id}
        assert roles(r, kb, "b") == ["admin"] and roles(r, kb, "e") == []


def test_two_hostile_derived_admins_and_a_chain_of_grants() -> None:
    """A grants B, B grants D (admins all); A is retroactively revoked. Neither
    B's nor D's revokes count, in any sort order, and the admin keeps its power."""
    kb = KB()
    kb.grant("admin", "a", "admin")
    kb.sync("admin", "a")
    kb.grant("a", "b", "admin")
    kb.sync("a", "b")
    kb.grant("b", "d", "admin")
    kb.sync("b", "d")
    kb.grant("admin", "x", "member")
    honest = kb.revoke("admin", "a", retroactive=True)
    from_b = kb.revoke("b", "admin", retroactive=True)
    from_d = kb.revoke("d", "x", retroactive=True)
    for order in orders(kb.ops[1:], limit=400, seed=5):
        r = deliver(kb, order)
        assert r.membership.effective_revokes == {honest.id}, (from_b.id, from_d.id)
        assert roles(r, kb, "x") == ["member"]
        assert roles(r, kb, "b") == [] and roles(r, kb, "d") == []


def test_of_two_revokes_that_disable_each_other_the_earlier_stands() -> None:
    """B1 (granted by A1) revokes A2 and B2 (granted by A2) revokes A1, both
    retroactively: each voids the other's author's grant, and neither targets
    the other's author. Without the other each passes; the earlier in
    (lamport, id) order stands, in every delivery order."""
    kb = KB()
    for a in ("a1", "a2"):
        kb.grant("admin", a, "admin")
        kb.sync("admin", a)
    kb.grant("a1", "b1", "admin")
    kb.grant("a2", "b2", "admin")
    kb.sync("a1", "b1")
    kb.sync("a2", "b2")
    one = kb.revoke("b1", "a2", retroactive=True)
    two = kb.revoke("b2", "a1", retroactive=True)
    first, second = sorted((one, two), key=lambda op: (op.lamport, op.id))
    loser = "b2" if first is one else "b1"
    for order in orders(kb.ops[1:], seed=6):
        r = deliver(kb, order)
        assert r.membership.effective_revokes == {first.id}, second.id
        assert roles(r, kb, loser) == []


def test_an_admin_never_wins_a_revoke_race_against_the_genesis_key() -> None:
    """A (granted by the genesis admin) revokes the admin while the admin
    revokes A, A's revoke sorting first in (lamport, id) order. The genesis key
    is the more senior admin, so its revoke stands, plain or retroactive."""
    for retroactive in (True, False):
        kb = KB()
        kb.grant("admin", "a", "admin")
        kb.sync("admin", "a")
        for name in ("x", "y", "z"):
            kb.grant("admin", name, "member")
        by_admin = kb.revoke("admin", "a", retroactive=True)
        by_a = kb.revoke("a", "admin", retroactive=retroactive)
        assert (by_a.lamport, by_a.id) < (by_admin.lamport, by_admin.id)
        for order in orders(kb.ops[1:], seed=7):
            r = deliver(kb, order)
            assert r.membership.effective_revokes == {by_admin.id}
            assert roles(r, kb, "x") == ["member"]


def test_the_more_senior_admin_wins_whatever_the_lamport_times() -> None:
    """A and C are admins the genesis key granted (depth 1); C granted D (depth
    2). D and A revoke each other plainly, D's sorting first: A's stands. The
    admin check alone would not decide it: D's grant is not void."""
    kb = KB()
    for name in ("a", "c"):
        kb.grant("admin", name, "admin")
        kb.sync("admin", name)
    kb.grant("c", "d", "admin")
    kb.sync("c", "d")
    kb.grant("admin", "x", "member")
    kb.grant("admin", "y", "member")
    kb.sync("admin", "a")
    by_a = kb.revoke("a", "d")
    by_d = kb.revoke("d", "a")
    assert (by_d.lamport, by_d.id) < (by_a.lamport, by_a.id)
    for order in orders(kb.ops[1:], seed=8):
        r = deliver(kb, order)
        assert r.membership.effective_revokes == {by_a.id}
        assert roles(r, kb, "a") == ["admin"] and roles(r, kb, "d") == []
        depth = r.membership.admin_depths(kb.key("admin"))
        assert [depth[kb.key(n)] for n in ("admin", "a", "c", "d")] == [0, 1, 1, 2]


def test_a_self_defeating_revoke_cannot_take_honest_revokes_with_it() -> None:
    """A (compromised) retroactively revokes the genesis key, which voids A's own
    grant: the revoke defeats itself. B's honest revoke of a spammer, sorting
    after it, fails the admin check only while A's counts. A's is dropped,
    B's stands, in every order."""
    kb = KB()
    kb.grant("admin", "a", "admin")
    kb.grant("admin", "b", "admin")
    kb.grant("admin", "spam", "member")
    for name in ("a", "b", "spam"):
        kb.sync("admin", name)
    kb.report("b")  # b's revoke sorts after a's
    honest = kb.revoke("b", "spam", retroactive=True)
    hostile = kb.revoke("a", "admin", retroactive=True)
    assert (hostile.lamport, hostile.id) < (honest.lamport, honest.id)
    for order in orders(kb.ops[1:], seed=9):
        r = deliver(kb, order)
        assert r.membership.effective_revokes == {honest.id}
        assert roles(r, kb, "spam") == [] and roles(r, kb, "b") == ["admin"]


def test_an_admin_that_saw_a_self_defeating_revoke_can_revoke_its_author() -> None:
    kb = KB()
    kb.grant("admin", "a", "admin")
    kb.grant("admin", "b", "admin")
    for name in ("a", "b"):
        kb.sync("admin", name)
    kb.revoke("a", "admin", retroactive=True)
    kb.sync("a", "b")
    by_b = kb.revoke("b", "a")  # plain: a's ops so far stay, its authority goes
    for order in orders(kb.ops[1:], seed=10):
        r = deliver(kb, order)
        assert r.membership.effective_revokes == {by_b.id}
        assert roles(r, kb, "a") == [] and roles(r, kb, "b") == ["admin"]
