"""Cells of the wrong type and damaged metadata (what one flipped bit in a record
header or in the file header makes of a store that ``PRAGMA integrity_check``
still calls "ok"): doctor names them and never crashes; the node and the writing
commands refuse the store with a StoreError that sends the user to doctor (exit
5), never an internal error (exit 70); a damaged fold stamp is repaired."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from gossipmind.core.errors import StoreError
from gossipmind.store.datadir import DataDir, dump_genesis
from gossipmind.store.doctor import EXIT_CORRUPT, diagnose
from gossipmind.store.keyfile import write_key
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB

CLI = [sys.executable, "-c", "from gossipmind.cli.main import main; main()"]


def gm(d: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--data-dir", str(d), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    """A stopped node's data dir with reports, two members and an equivocation."""
    kb = KB(seed=31)
    kb.grant("admin", "a", "member")
    kb.sync("admin", "a")
    for i in range(4):
        kb.report("admin", service="s", operation=f"o{i}")
    kb.report("a", service="s", operation="o0")
    d = DataDir(tmp_path / "dd")
    d.ensure()
    write_key(d.key, kb.admin)
    d.genesis.write_text(dump_genesis(kb.genesis))
    with Store.create(d.store, kb.genesis) as store:
        store.ingest(kb.ops[1:])
    return d


def sql(d: DataDir, *statements: str) -> None:
    with closing(sqlite3.connect(d.store)) as c:
        for statement in statements:
            assert c.execute(statement).rowcount != 0, statement
        c.commit()
    assert not (d.root / "kb.sqlite3-wal").exists()


CELLS = {
    "ops.id": "UPDATE ops SET id = 'x' WHERE ord = 3",
    "ops.raw": "UPDATE ops SET raw = 'hello' WHERE ord = 3",
    "ops.raw.int": "UPDATE ops SET raw = 12 WHERE ord = 4",
    "pending.raw": "INSERT INTO pending VALUES (x'00', 'p')",
    "pending.id": "INSERT INTO pending VALUES (5, x'00')",
    "rejected.id": "INSERT INTO rejected (id, code, detail) VALUES ('r', 'c', 'd')",
    "heads.id": "UPDATE heads SET id = 'h' WHERE id = (SELECT MIN(id) FROM heads)",
    "members.doc": "UPDATE members SET doc = 'm'",
    "members.key": "UPDATE members SET key = 42 WHERE key = (SELECT MIN(key) FROM members)",
    "patterns.doc": "UPDATE patterns SET doc = 7",
    "equivocations": "INSERT INTO equivocations VALUES (x'01', 1, 'e')",
    "meta.genesis": "UPDATE meta SET value = 'g' WHERE key = 'genesis'",
}


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_doctor_names_a_cell_of_the_wrong_type_and_never_crashes(
    data_dir: DataDir, cell: str
) -> None:
    """Before: `bytes()` of a str cell raised TypeError and doctor stopped with an
    internal error (exit 70) — on the damage the inspection commands send users to
    doctor for."""
    sql(data_dir, CELLS[cell])
    diag = diagnose(data_dir)
    assert diag.exit_code == EXIT_CORRUPT, diag.errors
    errors = {f.check for f in diag.errors}
    assert errors & {"sqlite.type", "meta.genesis"}, diag.errors
    table = cell.split(".", maxsplit=1)[0]
    assert any(table in f.message or f.check.startswith(table) for f in diag.errors), diag.errors


def test_doctor_and_every_command_refuse_a_damaged_network_id(data_dir: DataDir) -> None:
    """Before: doctor exit 70 (TypeError), every command exit 70."""
    sql(data_dir, "UPDATE meta SET value = 'n' WHERE key = 'net'")
    diag = diagnose(data_dir)
    assert [f.check for f in diag.errors] == ["store.header"]
    assert "network id is a str" in diag.errors[0].message
    for args in (("status",), ("report", "--service", "s", "--operation", "o")):
        out = gm(data_dir.root, *args)
        assert out.returncode == 5, (args, out.stderr)
        assert "network id is damaged" in out.stderr and "gossipmind doctor" in out.stderr


@pytest.mark.parametrize("cell", ["ops.raw", "pending.raw", "meta.genesis", "rejected.id"])
def test_opening_a_store_with_a_damaged_cell_is_a_store_error(data_dir: DataDir, cell: str) -> None:
    sql(data_dir, CELLS[cell])
    with pytest.raises(StoreError, match="run `gossipmind doctor`"):
        Store.open(data_dir.store)


def test_a_fold_stamp_turned_into_text_is_found_and_repaired(data_dir: DataDir) -> None:
    """One flipped bit turns the BLOB b"3:6" into the TEXT '3:6'. Before: doctor
    said healthy while the node and every writing command stopped with TypeError
    (exit 70)."""
    sql(data_dir, "UPDATE meta SET value = CAST(value AS TEXT) WHERE key = 'fold'")
    diag = diagnose(data_dir)
    assert [f.check for f in diag.errors] == ["meta.fold"], diag.errors
    report = gm(data_dir.root, "report", "--service", "s", "--operation", "new")
    assert report.returncode == 0, report.stderr
    diag = diagnose(data_dir)  # the writer rewrote the rows and the stamp
    assert diag.healthy, diag.errors


def test_a_schema_version_of_zero_is_refused_with_a_clear_error(data_dir: DataDir) -> None:
    """Bit 0 of header byte 63 flipped: user_version 1 -> 0. Before: doctor said
    healthy; the node and the writing commands hit `MIGRATIONS[1]` (KeyError) and
    stopped with an internal error."""
    sql(data_dir, "CREATE TABLE probe (x)", "DROP TABLE probe")  # a no-op write
    with closing(sqlite3.connect(data_dir.store)) as c:
        c.execute("PRAGMA user_version = 0")
        c.commit()
    before = data_dir.store.read_bytes()
    diag = diagnose(data_dir)
    assert "store.header" in {f.check for f in diag.errors}, diag.errors
    with pytest.raises(StoreError, match=r"schema version 0.*run `gossipmind doctor`"):
        Store.open(data_dir.store)
    report = gm(data_dir.root, "report", "--service", "s", "--operation", "o")
    assert report.returncode == 5 and "schema version 0" in report.stderr, report.stderr
    node = gm(data_dir.root, "node", "--no-api", "--listen", "/ip4/127.0.0.1/tcp/0")
    assert node.returncode == 5, node.stderr[-3000:]
    last = node.stderr.strip().splitlines()[-1]
    assert "schema version 0" in last and "gossipmind doctor" in last, last
    assert data_dir.store.read_bytes() == before  # refused, never modified
