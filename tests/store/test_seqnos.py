"""The gossip seqno reservation (store/seqnos.py): a node's message ids stay
ahead of every id it used before, whatever its clock says at the next start."""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from gossipmind.core.errors import StoreError
from gossipmind.node.config import NodeConfig
from gossipmind.node.opening import open_store
from gossipmind.store.datadir import DataDir
from gossipmind.store.doctor import diagnose
from gossipmind.store.seqnos import LIMIT, SPAN, reserve_seqnos
from gossipmind.testnet.setup import prepare

NOW = 1_800_000_000 * 10**9  # a Unix time in ns (2027)


@pytest.fixture
def d(tmp_path: Path) -> DataDir:
    """A node's data dir whose store exists (made by the node's own opening)."""
    d = DataDir(prepare(tmp_path, 1, 0)[0].dir)
    open_store(NodeConfig(data_dir=d.root, synchronous="NORMAL")).close()
    return d


def reserve(d: DataDir, now: int) -> int:
    with open_store(NodeConfig(data_dir=d.root, synchronous="NORMAL")) as store:
        return reserve_seqnos(store, now)


def stored(d: DataDir) -> object:
    with closing(sqlite3.connect(d.store)) as c:
        row = c.execute("SELECT value FROM meta WHERE key = 'seqno'").fetchone()
    return None if row is None else row[0]


def test_each_start_begins_past_the_last_reservation_whatever_the_clock(d: DataDir) -> None:
    assert stored(d) is None
    first = reserve(d, NOW)
    assert first == NOW
    assert stored(d) == (NOW + SPAN).to_bytes(8, "big")  # durable: read by another connection
    # the clock stepped back an hour: the next run starts where the last one's span ends
    second = reserve(d, NOW - 3_600 * 10**9)
    assert second == NOW + SPAN
    assert stored(d) == (NOW + 2 * SPAN).to_bytes(8, "big")
    # a clock past the reservation wins
    later = NOW + 10 * SPAN
    assert reserve(d, later) == later
    assert stored(d) == (later + SPAN).to_bytes(8, "big")
    assert diagnose(d).healthy


@pytest.mark.parametrize(
    ("damage", "found"),
    [("CAST(x'0102' AS TEXT)", "str"), ("x'010203'", "bytes"), ("7", "int")],
)
def test_a_damaged_reservation_is_reported_and_replaced_from_the_clock(
    d: DataDir, damage: str, found: str, caplog: pytest.LogCaptureFixture
) -> None:
    reserve(d, NOW)
    with closing(sqlite3.connect(d.store)) as c:
        c.execute(f"UPDATE meta SET value = {damage} WHERE key = 'seqno'")
        c.commit()
    diag = diagnose(d)
    assert diag.healthy  # a warning: the store is usable, the node repairs it
    (finding,) = [f for f in diag.findings if f.check == "meta.seqno"]
    assert finding.severity == "warning" and "damaged" in finding.message
    assert f"a {found} (" in finding.message
    with caplog.at_level(logging.WARNING, logger="gossipmind.store"):
        assert reserve(d, NOW + 5) == NOW + 5
    assert "seqno reservation in the metadata is damaged" in caplog.text
    assert stored(d) == (NOW + 5 + SPAN).to_bytes(8, "big")
    assert not [f for f in diagnose(d).findings if f.check == "meta.seqno"]


def test_an_exhausted_seqno_space_is_a_clear_error_and_changes_nothing(d: DataDir) -> None:
    end = (LIMIT - SPAN + 1).to_bytes(8, "big")
    with closing(sqlite3.connect(d.store)) as c:
        c.execute("INSERT INTO meta VALUES ('seqno', ?)", (end,))
        c.commit()
    with pytest.raises(StoreError, match="seqno space is exhausted"):
        reserve(d, NOW)
    assert stored(d) == end
