"""Reading op bytes back for the fold's records (store/readback.py): a range
scan from a chunk's first id, ``id IN (…)`` for what the scan does not meet;
either way every op is hashed against its id."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from gossipmind.core import ops as opsmod
from gossipmind.core.errors import StoreError
from gossipmind.core.records import CHUNK
from gossipmind.store import readback
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB


def build(path: Path, grants_between: int) -> tuple[KB, list[bytes]]:
    """A store of reports by two members with ``grants_between`` grants (ops that
    are no records) after every report; the report ids in application order."""
    kb = KB()
    kb.grant("admin", "a", "member")
    kb.grant("admin", "b", "member")
    kb.sync("admin", "a")
    kb.sync("admin", "b")
    reports: list[bytes] = []
    for i in range(CHUNK + 100):
        reports.append(kb.report("a" if i % 2 else "b", template=f"op {i} <*>").id)
        for j in range(grants_between if i < 40 else 0):
            kb.grant("admin", f"m{i}-{j}", "member")
    with Store.create(path, kb.genesis) as store:
        for op in kb.ops[1:]:
            store.ingest([op], verified=True)
    return kb, reports


@pytest.mark.parametrize("between", [0, 3], ids=["adjacent", "grants-between"])
def test_records_read_back_in_order_shuffled_and_partly_missing(
    tmp_path: Path, between: int
) -> None:
    kb, reports = build(tmp_path / "kb.sqlite3", between)
    raw = {op.id: op.raw for op in kb.ops}
    with Store.open(tmp_path / "kb.sqlite3") as store:
        conn, path = store.conn, store.path
        # in application order (a rebuild): the scan finds them, or the fallback does
        assert readback.raws_of(conn, path, reports) == {i: raw[i] for i in reports}
        # in another order, and with ids the file does not hold: the rest is found
        shuffled = random.Random(3).sample(reports, k=len(reports))
        unknown = [bytes(32), b"\x01" * 32]
        got = readback.raws_of(conn, path, [unknown[0], *shuffled, unknown[1]])
        assert got == {i: raw[i] for i in reports}
        # the store's replica rebuilds from them like a replica holding every op
        assert store.replica.fold.records.held < len(reports)
        before = {p: (a.reporters, a.first) for p, a in store.replica.fold.patterns.items()}
        store.replica._recompute()
        after = {p: (a.reporters, a.first) for p, a in store.replica.fold.patterns.items()}
        assert after == before and len(after) == len(reports)


@pytest.mark.parametrize("where", ["scanned", "looked-up"])
def test_damaged_bytes_are_a_store_error_on_either_path(tmp_path: Path, where: str) -> None:
    _, reports = build(tmp_path / "kb.sqlite3", 0)
    victim = reports[5]
    ids = reports[:20] if where == "scanned" else [victim]
    damaged = r"bytes of op .* are damaged; run `gossipmind doctor`"
    with Store.open(tmp_path / "kb.sqlite3") as store:  # damaged while the node runs
        with sqlite3.connect(tmp_path / "kb.sqlite3") as conn:
            (raw,) = conn.execute("SELECT raw FROM ops WHERE id = ?", (victim,)).fetchone()
            flipped = raw[:-1] + bytes([raw[-1] ^ 1])
            conn.execute("UPDATE ops SET raw = ? WHERE id = ?", (flipped, victim))
        conn.close()
        assert opsmod.op_id(flipped) != victim
        with pytest.raises(StoreError, match=damaged):
            readback.raws_of(store.conn, store.path, ids)
