"""An equivocator's fork flood: each commit writes rows for what changed, not for
every head and every fork held (one head per fork made each commit cost O(forks))."""

from __future__ import annotations

from pathlib import Path

from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import snapshot
from gossipmind.store.doctor import diagnose
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, sample_report

FORKS = 400


def test_a_fork_flood_costs_each_commit_a_bounded_number_of_rows(tmp_path: Path) -> None:
    kb = KB(seed=7)
    kb.grant("admin", "m", "member")
    kb.sync("admin", "m")
    base = kb.ops[1:]  # (forge adds to kb.ops)
    forks = [
        kb.forge("m", "pattern.report", sample_report(template=f"fork {i} <*>"), seq=1)
        for i in range(FORKS)
    ]
    path = tmp_path / "kb.sqlite3"
    changes = []
    with Store.create(path, kb.genesis) as store:
        store.ingest(base)
        for op in forks:  # one op per commit, as gossip can deliver them
            before = store.conn.total_changes
            store.ingest([op])
            changes.append(store.conn.total_changes - before)
        root, heads = store.replica.root(), set(store.replica.heads)
        assert len(heads) == FORKS  # every fork is a head
    # rows per commit do not grow with the forks already held (they grew by two
    # per head: the whole heads table was deleted and written again)
    assert max(changes[-10:]) <= max(changes[1:10]) + 2
    assert max(changes) < 40
    with Store.open(path) as store:
        assert store.replica.root() == root
        assert set(store.replica.heads) == heads
        assert store.replica.equivocations == {(kb.key("m"), 1): sorted(o.id for o in forks)}
    assert diagnose(path).healthy  # the heads and equivocations tables match the ops


def test_a_snapshot_taken_before_more_forks_keeps_its_forks() -> None:
    """The replica now adds a fork to its list in place: a snapshot that held that list
    changed with the replica, so comparing it with a later one could not fail (s9 review)."""
    kb = KB(seed=7)
    kb.grant("admin", "m", "member")
    kb.sync("admin", "m")
    base = kb.ops[1:]
    forks = [
        kb.forge("m", "pattern.report", sample_report(template=f"fork {i} <*>"), seq=1)
        for i in range(3)
    ]
    r = Replica(kb.genesis)
    for op in [*base, *forks[:2]]:
        r.ingest(op, verified=True)
    before = snapshot(r)
    r.ingest(forks[2], verified=True)
    assert len(before["equivocations"][0][2]) == 2
    assert snapshot(r) != before
