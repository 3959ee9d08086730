"""A store's replica does not hold the bytes of durable ops (core/records.py): a
rebuild (revokes, equivocators) and the learner read them back from the file, and
give exactly what a replica holding every op's bytes gives."""

from __future__ import annotations

import gc
import random
import sqlite3
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipmind.core import ops as opsmod
from gossipmind.core.errors import StoreError
from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import snapshot
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB
from gossipmind.testing.kb import History

PROPERTY = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))


def reference(h: History) -> Replica:
    r = Replica(h.kb.genesis)
    for op in h.kb.ops[1:]:
        r.ingest(op, verified=True)
    return r


@PROPERTY
@given(seed=st.integers(0, 10_000), order=st.integers(0, 2**32))
def test_a_store_that_releases_op_bytes_folds_like_a_replica_that_keeps_them(
    tmp_path_factory: pytest.TempPathFactory, seed: int, order: int
) -> None:
    """Random histories (grants, plain and retroactive revokes, forks, goals),
    delivered shuffled in random batches with a reopen half-way: every state, and
    the learner's view of the records, equals the in-memory replica's."""
    h = History(seed, steps=70)
    ref = reference(h)
    rng = random.Random(order)
    ops = h.kb.ops[1:]
    shuffled = ops + rng.sample(ops, k=len(ops) // 5)
    rng.shuffle(shuffled)
    path = tmp_path_factory.mktemp("kb") / "kb.sqlite3"
    store = Store.create(path, h.kb.genesis)
    half = len(shuffled) // 2
    reopened = False
    try:
        at = 0
        while at < len(shuffled):
            if at >= half and not reopened:  # a replay half-way, then more batches
                store.close()
                store = Store.open(path)
                reopened = True
            n = rng.randint(1, 9)
            store.ingest(shuffled[at : at + n], verified=True)
            at += n
        records = store.replica.fold.records
        assert records.held == 0  # every op durable: no bytes kept
        assert store.replica.root() == ref.root()
        assert snapshot(store.replica) == snapshot(ref)
        mine = sorted((m.id, raw, roles) for m, raw, roles in records)
        theirs = sorted((m.id, raw, roles) for m, raw, roles in ref.fold.records)
        assert mine == theirs  # the learner's view: each op's bytes and its roles
        assert ref.fold.records.held == len(ref.fold.records)  # (no store: kept)
    finally:
        store.close()
    with Store.open(path) as again:  # a replay with a rebuild at its end
        assert snapshot(again.replica) == snapshot(ref)
        assert again.replica.fold.records.held == 0


def test_a_history_with_revokes_rebuilds_from_the_file(tmp_path: Path) -> None:
    h = History(3, steps=120)
    ref = reference(h)
    with Store.create(tmp_path / "kb.sqlite3", h.kb.genesis) as store:
        for op in h.kb.ops[1:]:
            store.ingest([op], verified=True)
        assert store.replica.recomputes > 0  # rebuilds ran on released records
        assert store.replica.fold.records.held == 0
        assert snapshot(store.replica) == snapshot(ref)


def test_an_op_gone_from_the_file_is_a_store_error_not_a_wrong_fold(tmp_path: Path) -> None:
    kb = KB(seed=9)
    kb.grant("admin", "agent", "member")
    kb.sync("admin", "agent")
    for i in range(5):
        kb.report("agent", template=f"gone {i} <*>")
    path = tmp_path / "kb.sqlite3"
    with Store.create(path, kb.genesis) as store:
        store.ingest(kb.ops[1:], verified=True)
        victim = kb.ops[-1].id
        with sqlite3.connect(path) as c:  # damage behind the store's back
            c.execute("DELETE FROM ops WHERE id = ?", (victim,))
        c.close()
        with pytest.raises(StoreError, match=r"gone from the store.*doctor"):
            list(store.replica.fold.records)


def test_a_held_op_of_a_store_costs_its_bookkeeping_not_its_bytes(
    tmp_path: Path,
) -> None:
    kb = KB(seed=5)
    kb.grant("admin", "agent", "member")
    kb.sync("admin", "agent")
    n = 2000
    for i in range(n):
        kb.report("agent", template=f"failure kind {i % 20} <*> after <*> ms", count=1 + i % 7)
    raws = [bytes(bytearray(op.raw)) for op in kb.ops[2:]]
    raw_size = sum(map(len, raws)) / n
    with Store.create(tmp_path / "kb.sqlite3", kb.genesis) as store:
        store.ingest([kb.ops[1]], verified=True)
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for start in range(0, n, 100):  # fresh bytes, as from the network
                chunk = raws[start : start + 100]
                store.ingest([opsmod.decode(bytes(bytearray(r))) for r in chunk], verified=True)
            gc.collect()
            per_op = (tracemalloc.get_traced_memory()[0] - base) / n
        finally:
            tracemalloc.stop()
        assert len(store.replica.fold.records) == n
    # measured: 445 B (921 when the fold kept each op's bytes, as a replica on its own
    # does: tests/core/test_fold_memory.py)
    assert per_op < 600, f"{per_op:.0f} B per held op ({raw_size:.0f} B of bytes)"


def _revoke_batch(tmp_path: Path) -> tuple[History, Store, list[opsmod.Op], int]:
    """A store holding a history up to its first revoke; that revoke and the rest
    are still to come (applying it rebuilds the fold from the file)."""
    h = History(3, steps=120)
    ops = h.kb.ops[1:]
    cut = next(i for i, op in enumerate(ops) if op.kind == "member.revoke")
    store = Store.create(tmp_path / "kb.sqlite3", h.kb.genesis)
    store.ingest(ops[:cut], verified=True)
    return h, store, ops, cut


def test_a_rebuild_that_cannot_read_the_file_makes_the_store_unusable_not_wrong(
    tmp_path: Path,
) -> None:
    """The rebuild at a batch's end reads ops back; if that fails the batch is in
    memory and not in the file: the store says so and takes nothing more, and
    reopened it holds what it had written."""
    h, store, ops, cut = _revoke_batch(tmp_path)
    records = store.replica.fold.records
    written = len(store.replica.meta)

    def failing(ids: list[bytes]) -> dict[bytes, bytes]:
        raise StoreError("disk I/O error")

    records.loader = failing
    with pytest.raises(StoreError, match="disk I/O error"):
        store.ingest(ops[cut:], verified=True)
    assert store.broken is not None and "disk I/O error" in store.broken
    with pytest.raises(StoreError, match="unusable"):
        store.ingest(ops[cut:], verified=True)
    store.close()
    with Store.open(tmp_path / "kb.sqlite3") as again:
        assert len(again.replica.meta) == written  # what it had written
        again.ingest(ops[cut:], verified=True)
        assert snapshot(again.replica) == snapshot(reference(h))


def test_damaged_bytes_read_back_are_refused_not_folded(tmp_path: Path) -> None:
    """A stored op whose bytes no longer hash to its id (a flipped bit, a hand
    edit) is a StoreError naming doctor, never counted as it now reads."""
    _, store, ops, cut = _revoke_batch(tmp_path)
    victim = next(op for op in ops[:cut] if op.kind == "pattern.report")
    damaged = bytearray(victim.raw)
    damaged[-80] ^= 0x01
    store.conn.execute("UPDATE ops SET raw = ? WHERE id = ?", (bytes(damaged), victim.id))
    with pytest.raises(StoreError, match=r"damaged; run `gossipmind doctor`"):
        store.ingest(ops[cut:], verified=True)
    assert store.broken is not None
    store.close()
