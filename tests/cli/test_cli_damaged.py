"""Inspection of a store whose rows are not what they should be: a timestamp no date
can show, an id a damaged record header turned into text, a number or NULL. The
commands say so (``?``, or the damaged-row error: exit 5, "run gossipmind doctor"),
never crash with an internal error (exit 70)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from test_cli import Dirs, key, net

from gossipmind.cli.inspect import _when
from gossipmind.core import encoding

__all__ = ["net"]  # the fixture, shared with test_cli


def _sql(store: Path, sql: str, args: tuple[object, ...] = ()) -> None:
    with sqlite3.connect(store) as conn:
        conn.execute(sql, args)
    conn.close()


@pytest.mark.parametrize("ts", [2**62, -(2**62), 10**30, 2**63 - 1, float("inf"), "x", [1]])
def test_a_time_no_date_can_show_is_a_question_mark(ts: object) -> None:
    assert _when(ts) == "?"


def test_times_that_dates_can_show_still_show() -> None:
    assert _when(0) == "-"
    assert _when(1_700_000_000_000) == "2023-11-14 22:13:20"
    assert _when(253_402_300_799_999) == "9999-12-31 23:59:59"


def test_a_far_future_last_seen_is_shown_as_unknown(
    net: Dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pattern whose last report claims a time past year 9999 (an author's clock
    or a store from before the op timestamp bound) is listed, its time a ``?``."""
    monkeypatch.setenv("COLUMNS", "250")
    d = net
    pattern = d.json("admin", "report", "--service", "payments", "--operation", "charge")
    store = d.root / "admin" / "kb.sqlite3"
    pid = bytes.fromhex(pattern["pattern"])
    with sqlite3.connect(store) as conn:
        (raw,) = conn.execute("SELECT doc FROM patterns WHERE pattern = ?", (pid,)).fetchone()
    conn.close()
    doc = encoding.decode(bytes(raw))
    doc["last_ts"] = 2**62
    _sql(store, "UPDATE patterns SET doc = ? WHERE pattern = ?", (encoding.encode(doc), pid))
    result = d.run("admin", "patterns")
    row = next(line for line in result.output.splitlines() if "payments/charge" in line)
    assert row.rstrip(" │┃").endswith("?"), row
    assert d.json("admin", "patterns")[0]["last_ts"] == 2**62  # the JSON keeps the value


@pytest.mark.parametrize("bad", ["'not-bytes'", "7", "-1", "1.5"])
def test_an_id_that_is_not_bytes_is_a_damaged_row(net: Dirs, bad: str) -> None:
    d = net
    store = d.root / "admin" / "kb.sqlite3"
    d.run("admin", "grant", key(d, "agent"), "--role", "member")
    agent = key(d, "agent")
    latest = d.json("admin", "log", "--limit", "1")[0]["id"]
    _sql(store, f"UPDATE members SET key = {bad} WHERE key = x'{agent}'")
    _sql(store, f"UPDATE ops SET id = {bad} WHERE id = x'{latest}'")
    _sql(store, f"UPDATE heads SET id = {bad}")
    for args, table in (
        (("members",), "members"),
        (("members", "--json"), "members"),
        (("log",), "ops"),
        (("log", "--json"), "ops"),
        (("status",), "heads"),
    ):
        result = d.run("admin", *args, ok=False)
        assert result.exit_code == 5, (args, result.output, result.exception)
        line = result.output.strip()
        assert str(store) in line and f"table {table}" in line and "gossipmind doctor" in line


def test_a_null_id_is_a_damaged_row(net: Dirs) -> None:
    """NOT NULL holds for what SQLite writes, not for a flipped bit in a record header:
    a NULL id reaches the reader as None."""
    d = net
    store = d.root / "admin" / "kb.sqlite3"
    latest = d.json("admin", "log", "--limit", "1")[0]["id"]
    with sqlite3.connect(store) as conn:  # drop the constraint to write what damage makes
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute(
            "UPDATE sqlite_master SET sql = replace(sql, 'id       BLOB NOT NULL UNIQUE',"
            " 'id       BLOB UNIQUE') WHERE name = 'ops'"
        )
    conn.close()
    _sql(store, f"UPDATE ops SET id = NULL WHERE id = x'{latest}'")
    result = d.run("admin", "log", ok=False)
    assert result.exit_code == 5, (result.output, result.exception)
    assert "table ops" in result.output and "gossipmind doctor" in result.output
