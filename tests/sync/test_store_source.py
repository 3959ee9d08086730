"""What a responder reads from its SQLite store to answer a hello (StoreSource).

docs/sync.md §3.3: a catch-up's cost does not depend on the size of the
knowledge base. ``missing_for`` merged one paged cursor per author, and
``heapq.merge`` primes every cursor before it yields: the first `ops` frame for a
peer with an empty version vector needed a page of up to 2 000 ops of *every*
author in memory, the whole store when authors hold fewer (149 MiB for a
136 MiB store of 500 authors), held for the whole session.
"""

from __future__ import annotations

import heapq
import os
import random
import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossipmind.core import ops as opsmod
from gossipmind.core.identity import Identity
from gossipmind.core.policy import Policy
from gossipmind.core.replica import create_genesis
from gossipmind.store import source as source_module
from gossipmind.store.source import StoreSource
from gossipmind.store.sqlite import Store
from gossipmind.sync import messages
from gossipmind.sync.session import frames
from gossipmind.testing import History, sample_report

AUTHORS, PER_AUTHOR = 64, 150  # ~1.1 KiB ops: ~10 MiB of op bytes
MIB = 1 << 20


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path = tmp_path_factory.mktemp("source") / "kb.sqlite3"
    admin = Identity(os.urandom(32))
    genesis = create_genesis(admin, "source", Policy(open_membership=True), os.urandom(16), 1)
    with Store.create(path, genesis, synchronous="OFF") as store:
        for a in range(AUTHORS):
            body = [
                sample_report(template=f"a{a} op{i} " + "x" * 1000, count=1 + i)
                for i in range(PER_AUTHOR)
            ]
            store.create_ops(
                Identity(os.urandom(32)), [("pattern.report", b, i) for i, b in enumerate(body)]
            )
        yield store


def op_bytes(store: Store) -> int:
    return int(store.conn.execute("SELECT SUM(LENGTH(raw)) FROM ops").fetchone()[0])


def traced_peak(run: object) -> int:
    """Peak bytes allocated while ``run()`` runs (tracemalloc)."""
    tracemalloc.start()
    try:
        run()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_fresh_peer_costs_the_responder_a_page_not_the_store(big_store: Store) -> None:
    source = StoreSource(big_store)
    assert op_bytes(big_store) > 9 * MIB
    sizes: list[int] = []

    def first_frame() -> None:
        it = frames(source.missing_for({}))
        sizes.append(sum(map(len, next(it).ops)))

    def every_frame() -> None:
        sizes.append(sum(sum(map(len, f.ops)) for f in frames(source.missing_for({}))))

    first = traced_peak(first_frame)
    assert sizes[0] > 500 * 1024  # a full frame went out
    assert first < 3 * MIB, f"the first frame held {first / MIB:.1f} MiB in memory"
    whole = traced_peak(every_frame)
    assert sizes[1] == op_bytes(big_store)  # the whole store, genesis included
    assert whole < 3 * MIB, f"the catch-up held {whole / MIB:.1f} MiB in memory at once"


def test_a_peer_lacking_one_op_per_author_gets_exactly_those(big_store: Store) -> None:
    source = StoreSource(big_store)
    vv = {a: s - 1 for a, s in source.version_vector().items()}  # 0: none (the genesis)
    got = list(source.missing_for(vv))
    assert len(got) == len(vv) == AUTHORS + 1
    last = {
        bytes(raw)
        for (raw,) in big_store.conn.execute(
            "SELECT raw FROM ops o WHERE seq = (SELECT MAX(seq) FROM ops WHERE author = o.author)"
        )
    }
    assert set(got) == last
    assert list(source.missing_for(source.version_vector())) == []  # in sync: nothing


def reference(path: Path, vv: dict[bytes, int]) -> list[bytes]:
    """Every op above the peer's seq for its author, in application order."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT author, seq, raw FROM ops ORDER BY ord").fetchall()
    conn.close()
    return [bytes(raw) for author, seq, raw in rows if seq > vv.get(bytes(author), 0)]


@pytest.mark.parametrize("mode", ["either", "range", "by author"])
@pytest.mark.parametrize("seed", range(6))
def test_missing_ops_come_in_application_order_forks_included(
    tmp_path: Path, seed: int, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random histories with equivocating forks and merges between replicas; vectors
    empty, random, and lacking one author: the ops above the vector, in the
    store's application order (so each after its deps), whether the range is read
    whole or the missing ops are looked up by author."""
    if mode == "range":
        monkeypatch.setattr(source_module, "_SPARSE_MAX", -1)
    elif mode == "by author":
        monkeypatch.setattr(source_module, "_DENSE", 0)
    h = History(seed, steps=80)
    path = tmp_path / "kb.sqlite3"
    rng = random.Random(seed)
    with Store.create(path, h.kb.genesis, synchronous="OFF") as store:
        ops = h.kb.ops[1:]
        for start in range(0, len(ops), 9):
            store.ingest(ops[start : start + 9])
        source = StoreSource(store)
        mine = source.version_vector()
        vectors = [{}, mine, {a: rng.randint(0, s) for a, s in mine.items()}]
        vectors += [{a: s for a, s in mine.items() if a != drop} for drop in sorted(mine)[:3]]
        for vv in vectors:
            got = list(source.missing_for(vv))
            assert got == reference(path, vv)
            # causal (§3.1): each op's deps are held by the peer already (ops the
            # vector covers) or come earlier in the stream
            sent = {opsmod.op_id(raw) for raw in got}
            known = {op_id for op_id in store.replica.meta if op_id not in sent}
            for raw in got:
                op = opsmod.decode(raw)
                assert all(d in known for d in op.deps), "an op came before its deps"
                known.add(op.id)


def test_missing_ops_past_the_listing_bound_are_read_as_a_range(
    big_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = StoreSource(big_store)
    vv = {a: s - 1 for a, s in source.version_vector().items()}
    listed = source._missing_ords(vv)
    assert listed is not None and len(listed) == AUTHORS + 1
    monkeypatch.setattr(source_module, "_SPARSE_MAX", AUTHORS)  # one fewer than lacking
    assert source._missing_ords(vv) is None
    assert len(list(source.missing_for(vv))) == AUTHORS + 1  # the range, read whole


def merged_per_author(store: Store, vv: dict[bytes, int]) -> Iterator[bytes]:
    """What missing_for served before: one cursor per author (seq order), merged by ord."""

    def author_ops(author: bytes, after: int) -> Iterator[tuple[int, bytes]]:
        while True:
            page = store.conn.execute(
                "SELECT ord, seq, raw FROM ops WHERE author = ? AND seq > ?"
                " ORDER BY seq, ord LIMIT 2000",
                (author, after),
            ).fetchall()
            yield from ((o, bytes(raw)) for o, _, raw in page)
            if len(page) < 2000:
                return
            after = page[-1][1]

    mine = store.replica.last_seq
    lacking = sorted(a for a, s in mine.items() if s > vv.get(a, 0))
    for _, raw in heapq.merge(*(author_ops(a, vv.get(a, 0)) for a in lacking)):
        yield raw


def test_the_frames_on_the_wire_are_the_same_as_before(big_store: Store) -> None:
    """Without forks the ops went out in application order before too: the frames
    are byte for byte the same, whichever way the missing ops are read."""
    source = StoreSource(big_store)
    mine = source.version_vector()
    rng = random.Random(7)
    vectors = [
        {},
        {a: s - 1 for a, s in mine.items()},
        {a: rng.randint(0, s) for a, s in mine.items()},
    ]
    vectors.append({a: s for a, s in mine.items() if a != sorted(mine)[5]})
    for vv in vectors:
        ours = [messages.encode(f) for f in frames(source.missing_for(vv))]
        before = [messages.encode(f) for f in frames(merged_per_author(big_store, vv))]
        assert ours == before
