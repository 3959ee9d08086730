"""Fuzz ingestion: ``Replica.ingest_raw`` and ``Store.ingest_raw`` never raise, and junk
changes nothing but the rejected set (no op applied, no pending op, same fold, same root).
"""

from __future__ import annotations

import functools
from pathlib import Path

from fuzzkit import containers_for_strs, fuzz_settings, junk, seed_ops
from hypothesis import event, given
from hypothesis import strategies as st

from gossipmind.core import ops as opsmod
from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import snapshot
from gossipmind.store.doctor import diagnose
from gossipmind.store.sqlite import Store

SEEDS = seed_ops()
GENESIS = opsmod.decode(SEEDS[0])
# junk, and signed ops with an array or a map where a str is expected (a recipe
# step's `type` as an array used to raise TypeError out of ingest)
INPUTS = st.one_of(junk(SEEDS), containers_for_strs(SEEDS))


@functools.cache
def loaded() -> tuple[Replica, dict[str, object]]:
    """A replica holding every seed (its state is compared, never changed, across examples)."""
    r = Replica(GENESIS)
    for raw in SEEDS[1:]:
        r.ingest_raw(raw)
    return r, snapshot(r)


def state(r: Replica) -> tuple[object, ...]:
    return (r.root(), set(r.meta), set(r.heads), set(r.pending.ops), dict(r.last_seq))


@fuzz_settings(600)
@given(st.lists(INPUTS, min_size=1, max_size=5))
def test_replica_ingest_raw_never_raises_and_junk_changes_nothing(raws: list[bytes]) -> None:
    r, snap = loaded()
    before = state(r)
    rejected = dict(r.rejected)
    try:
        for raw in raws:
            result = r.ingest_raw(raw)
            if raw in SEEDS:
                event("a seed (duplicate)")
                assert result.duplicates == 1 and not result.rejected
                continue
            assert not result.applied and not result.pending, "junk was accepted"
            event(f"rejected: {result.rejected[0][1]}" if result.rejected else "duplicate junk")
        assert state(r) == before
        assert snapshot(r) == snap
        assert set(r.rejected) - set(rejected) <= {opsmod.op_id(raw) for raw in raws}
    finally:
        for oid in set(r.rejected) - set(rejected):  # keep the shared replica as it was
            del r.rejected[oid]


def test_store_ingest_raw_never_raises_and_stays_healthy(tmp_path: Path) -> None:
    """Batches of junk through the store (one transaction each); then doctor: healthy."""
    path = tmp_path / "kb.sqlite3"
    store = Store.create(path, GENESIS, synchronous="OFF")
    store.ingest_raw(list(SEEDS[1:]))
    batches = 0

    @fuzz_settings(150)
    @given(batch=st.lists(INPUTS, min_size=1, max_size=20))
    def fuzz(batch: list[bytes]) -> None:
        nonlocal batches
        batches += 1
        before = state(store.replica)
        result = store.ingest_raw(batch)
        assert not result.applied and not result.pending
        assert len(result.rejected) + result.duplicates <= len(batch)  # known junk: dropped
        assert state(store.replica) == before
        assert all(store.replica.known(opsmod.op_id(raw)) for raw in batch)

    with store:
        fuzz()
    diag = diagnose(path)
    assert diag.healthy, diag.findings
    assert diag.stats["ops"] == len(SEEDS) - 1  # every seed but the foreign op
    assert diag.stats["rejected"] >= batches // 2
