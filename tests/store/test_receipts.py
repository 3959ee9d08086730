"""The SDK's report ids are recorded in the transaction that commits their op.

"Committed" and "remembered" cannot disagree: an op that did not commit leaves
no id behind (a re-send after a crash is counted), and a committed op's ids
survive a reopen (a re-send is not counted twice). The table stays bounded.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gossipmind.core.errors import StoreError
from gossipmind.core.identity import Identity, load_key
from gossipmind.core.ops import Op
from gossipmind.store import receipts
from gossipmind.store.datadir import DataDir
from gossipmind.store.sqlite import Store
from gossipmind.testing import sample_report
from gossipmind.testnet.setup import prepare


@pytest.fixture
def node_dir(tmp_path: Path) -> tuple[DataDir, Identity]:
    data = DataDir(prepare(tmp_path, 1, 0)[0].dir)
    return data, load_key(data.key.read_bytes(), None)


def _request(i: int) -> tuple[str, dict[str, Any], int]:
    return ("pattern.report", sample_report(template=f"receipt {i} <*>"), 1_000 + i)


def test_ids_are_remembered_with_their_op_across_a_reopen(
    node_dir: tuple[DataDir, Identity],
) -> None:
    data, ident = node_dir
    ids = [secrets.token_bytes(16) for _ in range(3)]
    refused = ("pattern.report", {"not": "a report"}, 5)
    with Store.open(data.store) as store:
        made = store.create_ops(ident, [_request(0), refused], [ids[:2], ids[2:]])
        assert isinstance(made[0], Op) and not isinstance(made[1], Op)
        assert [store.knows_report(i) for i in ids] == [True, True, False]  # refused: not
    with Store.open(data.store) as store:
        assert [store.knows_report(i) for i in ids] == [True, True, False]
        ops = [bytes(r) for (r,) in store.conn.execute("SELECT raw FROM ops")]
        assert not [r for r in ops if any(i in r or i.hex().encode() in r for i in ids)]


def test_an_op_that_did_not_commit_leaves_no_id(
    node_dir: tuple[DataDir, Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ids' INSERT fails after the op's rows were written: the transaction
    rolls back both (a crash before the commit would lose both the same way)."""
    data, ident = node_dir
    rid = secrets.token_bytes(16)

    def full_disk(conn: sqlite3.Connection, ids: Any, now: float | None = None) -> None:
        if list(ids):
            raise sqlite3.OperationalError("database or disk is full")

    with Store.open(data.store) as store:
        before = store.conn.execute("SELECT COUNT(*) FROM ops").fetchone()[0]
        monkeypatch.setattr(receipts, "record", full_disk)
        with pytest.raises(StoreError):
            store.create_ops(ident, [_request(1)], [[rid]])
        monkeypatch.undo()
    with Store.open(data.store) as store:
        assert store.conn.execute("SELECT COUNT(*) FROM ops").fetchone()[0] == before
        assert not store.knows_report(rid)


def test_the_table_is_bounded_in_age_and_rows(
    node_dir: tuple[DataDir, Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _ = node_dir
    monkeypatch.setattr(receipts, "MAX_ROWS", 3)
    with Store.open(data.store) as store:
        conn = store.conn
        old = secrets.token_bytes(16)
        receipts.record(conn, [old], now=1_000_000)
        fresh = [secrets.token_bytes(16) for _ in range(5)]
        receipts.record(conn, fresh[:2], now=1_000_000 + receipts.KEEP_S + 1)
        assert not receipts.known(conn, old)  # expired
        receipts.record(conn, fresh[2:], now=1_000_000 + receipts.KEEP_S + 2)
        assert conn.execute("SELECT COUNT(*) FROM report_ids").fetchone()[0] == 3
        assert [receipts.known(conn, i) for i in fresh][2:] == [True] * 3  # the oldest went
