"""`gossipmind doctor`: healthy stores pass; each injected corruption is named; read-only."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipmind.cli.main import cli
from gossipmind.core import encoding
from gossipmind.core.ops import Op
from gossipmind.core.replica import Replica
from gossipmind.store.datadir import DataDir, dump_genesis
from gossipmind.store.doctor import (
    EXIT_CORRUPT,
    EXIT_NOT_A_STORE,
    EXIT_NOT_FOUND,
    EXIT_UNSAFE,
    Diagnosis,
    diagnose,
)
from gossipmind.store.keyfile import write_key
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, History


def fill(d: DataDir, kb: KB, ops: list[Op], batch: int = 25) -> None:
    d.ensure()
    write_key(d.key, kb.admin)
    fd = os.open(d.token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"t" * 43 + b"\n")
    os.close(fd)
    d.genesis.write_text(dump_genesis(kb.genesis))
    with Store.create(d.store, kb.genesis, synchronous="NORMAL") as s:
        for i in range(0, len(ops), batch):
            s.ingest(ops[i : i + batch])


def fingerprint(root: Path) -> dict[str, str]:
    """Name and content hash of every file in a data dir."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


def checked(d: DataDir) -> Diagnosis:
    """Run doctor and assert it changed nothing (not even a -wal or -shm file appears)."""
    before = fingerprint(d.root)
    diag = diagnose(d)
    assert fingerprint(d.root) == before, "doctor modified the data dir"
    return diag


def checks(diag: Diagnosis) -> set[str]:
    return {f.check for f in diag.errors}


class Sample:
    """A store from a random history: grants, revokes, equivocations, goals, fixes,
    rejected forgeries and ops waiting in the pending table."""

    def __init__(self, root: Path) -> None:
        self.h = History(1, steps=250)
        kb = self.h.kb
        good = Replica(kb.genesis)
        for op in kb.ops[1:]:
            good.ingest(op, verified=True)
        self.valid = [op for op in kb.ops[1:] if op.id in good.meta]
        deps_of: dict[bytes, list[Op]] = {}
        for op in self.valid:
            for dep in op.deps:
                deps_of.setdefault(dep, []).append(op)
        # a report in the middle that later ops depend on
        self.victim = next(
            op
            for op in self.valid[len(self.valid) // 2 :]
            if op.kind == "pattern.report" and deps_of.get(op.id)
        )
        self.dependents = deps_of[self.victim.id]
        # withhold one late op so that the ops after it wait in the pending table
        self.withheld = next(op for op in reversed(self.valid[:-3]) if deps_of.get(op.id))
        ops = [op for op in kb.ops[1:] if op.id != self.withheld.id]
        self.dir = DataDir(root / "healthy")
        fill(self.dir, kb, ops)

    def copy(self, dst: Path) -> DataDir:
        shutil.copytree(self.dir.root, dst)
        return DataDir(dst)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return Sample(tmp_path_factory.mktemp("doctor"))


@pytest.fixture
def damaged(sample: Sample, tmp_path: Path) -> Iterator[tuple[Sample, DataDir]]:
    yield sample, sample.copy(tmp_path / "dd")


def tamper(d: DataDir, *statements: tuple[str, tuple[object, ...]]) -> None:
    with closing(sqlite3.connect(d.store)) as c:
        for sql, args in statements:
            assert c.execute(sql, args).rowcount >= 1, sql
        c.commit()
    assert not d.store.with_name(d.store.name + "-wal").exists()


def test_a_healthy_store_passes_and_reports_its_figures(sample: Sample) -> None:
    diag = checked(sample.dir)
    assert diag.healthy and diag.exit_code == 0, diag.findings
    s = diag.stats
    # the history has equivocators: not damage, but said (every op of theirs is void)
    assert s["equivocations"] >= 1
    assert [(f.severity, f.check) for f in diag.findings] == [("warning", "equivocations")]
    assert s["integrity"] == "ok" and s["signatures_verified"] == s["ops"]
    assert s["pending"] >= 1 and s["rejected"] >= 1 and s["rejected_by_code"]
    assert s["root"] == s["stored_root"]
    with Store.open(sample.dir.store) as store:  # what the node would load
        assert store.replica.root() == s["root"] and len(store.replica.meta) == s["ops"]
        assert len(store.replica.pending) == s["pending"]


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 80), shuffle=st.booleans())
def test_random_histories_in_random_batches_are_healthy(
    tmp_path_factory: pytest.TempPathFactory, seed: int, batch: int, shuffle: bool
) -> None:
    kb = History(seed, steps=120).kb
    ops = kb.ops[1:]
    if shuffle:
        random.Random(seed).shuffle(ops)  # arrival order differs from the causal order
    d = DataDir(tmp_path_factory.mktemp("h") / "dd")
    fill(d, kb, ops, batch)
    diag = checked(d)
    assert diag.healthy, diag.findings
    said = any(f.check == "equivocations" for f in diag.findings)
    assert said == (diag.stats["equivocations"] > 0)


def only(diag: Diagnosis, check: str) -> list[str]:
    return [f.message for f in diag.findings if f.check == check]


def test_flipped_byte_in_an_op(damaged: tuple[Sample, DataDir]) -> None:
    sample, d = damaged
    raw = bytearray(sample.victim.raw)
    raw[len(raw) // 2] ^= 0x01
    tamper(d, ("UPDATE ops SET raw = ? WHERE id = ?", (bytes(raw), sample.victim.id)))
    diag = checked(d)
    assert diag.exit_code == EXIT_CORRUPT
    primary = [f for f in diag.errors if f.check in ("op.encoding", "op.signature")]
    assert [f.ref for f in primary] == [sample.victim.id]
    assert "op.downstream" in checks(diag)  # its dependents cannot be re-applied: one line
    assert checks(diag) <= {"op.encoding", "op.signature", "op.downstream"}


def test_wrong_id_column(damaged: tuple[Sample, DataDir]) -> None:
    sample, d = damaged
    tamper(d, ("UPDATE ops SET id = ? WHERE id = ?", (b"\x07" * 32, sample.victim.id)))
    diag = checked(d)
    assert diag.exit_code == EXIT_CORRUPT
    [f] = [f for f in diag.errors if f.check == "op.id"]
    assert f.ref == sample.victim.id and "070707" in f.message
    assert checks(diag) == {"op.id", "fold.root"}  # the root of the id column is wrong too


def test_deleted_dep_row(damaged: tuple[Sample, DataDir]) -> None:
    sample, d = damaged
    tamper(d, ("DELETE FROM ops WHERE id = ?", (sample.victim.id,)))
    diag = checked(d)
    assert diag.exit_code == EXIT_CORRUPT
    missing = [f for f in diag.errors if f.check == "op.missing_dep"]
    assert {f.ref for f in missing} == {op.id for op in sample.dependents}
    assert all(sample.victim.id.hex()[:12] in f.message for f in missing)


def test_ops_out_of_causal_order(damaged: tuple[Sample, DataDir]) -> None:
    sample, d = damaged
    child = sample.dependents[0]
    with closing(sqlite3.connect(d.store)) as c:
        (o_dep,) = c.execute("SELECT ord FROM ops WHERE id = ?", (sample.victim.id,)).fetchone()
        (o_child,) = c.execute("SELECT ord FROM ops WHERE id = ?", (child.id,)).fetchone()
    tamper(
        d,
        ("UPDATE ops SET ord = -1 WHERE ord = ?", (o_dep,)),
        ("UPDATE ops SET ord = ? WHERE ord = ?", (o_dep, o_child)),
        ("UPDATE ops SET ord = ? WHERE ord = -1", (o_child,)),
    )
    diag = checked(d)
    assert diag.exit_code == EXIT_CORRUPT
    assert "op.order" in checks(diag)
    assert any(f.ref == child.id for f in diag.errors if f.check == "op.order")


def rewrite_doc(
    d: DataDir, table: str, key: str, change: Callable[[dict[str, object]], None]
) -> bytes:
    with closing(sqlite3.connect(d.store)) as c:
        k, doc = c.execute(f"SELECT {key}, doc FROM {table} ORDER BY {key} LIMIT 1").fetchone()
    row = encoding.decode(doc)
    change(row)
    tamper(d, (f"UPDATE {table} SET doc = ? WHERE {key} = ?", (encoding.encode(row), k)))
    return bytes(k)


def test_tampered_materialised_rows(damaged: tuple[Sample, DataDir]) -> None:
    _, d = damaged

    def inflate(row: dict[str, object]) -> None:
        row["count"] = int(row["count"]) + 1000  # type: ignore[call-overload]

    pattern = rewrite_doc(d, "patterns", "pattern", inflate)
    fix = rewrite_doc(d, "fixes", "fix", lambda row: row.update(risk="none"))
    tamper(d, ("DELETE FROM members WHERE key = (SELECT MIN(key) FROM members)", ()))
    tamper(d, ("UPDATE goals SET active = 1 - active", ()))
    tamper(d, ("DELETE FROM heads", ()))
    diag = checked(d)
    assert diag.exit_code == EXIT_CORRUPT
    [p] = [f for f in diag.errors if f.check == "fold.patterns"]
    assert p.ref == pattern and "count stored" in p.message
    [x] = [f for f in diag.errors if f.check == "fold.fixes"]
    assert x.ref == fix and "risk stored 'none'" in x.message
    assert "missing" in only(diag, "fold.members")[0]
    assert only(diag, "fold.goals") and only(diag, "fold.heads")
    assert not any(c.startswith("op.") for c in checks(diag))


def test_tampered_pending_and_rejected_rows(damaged: tuple[Sample, DataDir]) -> None:
    sample, d = damaged
    with closing(sqlite3.connect(d.store)) as c:
        pid, raw = c.execute("SELECT id, raw FROM pending LIMIT 1").fetchone()
    bad = bytes(raw[:-1]) + bytes([raw[-1] ^ 0x80])  # in the signature: still decodes
    tamper(
        d,
        ("UPDATE pending SET raw = ? WHERE id = ?", (bad, pid)),
        (
            "INSERT INTO rejected (id, code, detail) VALUES (?, 'signature', 'x')",
            (sample.victim.id,),
        ),
    )
    diag = checked(d)
    # the id column no longer matches the bytes: the row is named by its id column
    assert {"pending.id", "rejected.applied"} <= checks(diag)
    assert any(f.ref == sample.victim.id for f in diag.errors if f.check == "rejected.applied")


def test_truncated_store_file(damaged: tuple[Sample, DataDir]) -> None:
    _, d = damaged
    size = d.store.stat().st_size
    os.truncate(d.store, size // 2)
    diag = checked(d)
    assert diag.exit_code == EXIT_CORRUPT
    assert any(c.startswith("sqlite") for c in checks(diag)), diag.findings
    os.truncate(d.store, 50)  # not even a header
    diag = checked(d)
    assert diag.exit_code == EXIT_CORRUPT and checks(diag) & {
        "store.open",
        "store.header",
        "sqlite",
    }


def test_wrong_permissions(damaged: tuple[Sample, DataDir]) -> None:
    _, d = damaged
    os.chmod(d.key, 0o644)
    os.chmod(d.token, 0o640)
    diag = checked(d)
    assert checks(diag) == {"perm.key", "perm.token"}
    assert diag.exit_code == EXIT_UNSAFE
    assert all("must be 0600" in f.message for f in diag.errors)
    os.chmod(d.root, 0o777)
    assert "perm.datadir" in {f.check for f in checked(d).findings}


def test_genesis_file_of_another_network(damaged: tuple[Sample, DataDir]) -> None:
    _, d = damaged
    d.genesis.write_text(dump_genesis(KB(seed=99).genesis))
    diag = checked(d)
    assert checks(diag) == {"genesis.file"}


def test_a_running_writer_does_not_disturb_the_check(sample: Sample, tmp_path: Path) -> None:
    """Doctor reads one snapshot while a store is being written (a node's ingest)."""
    d = DataDir(tmp_path / "live")
    kb = sample.h.kb
    fill(d, kb, [])
    ops = kb.ops[1:]
    done = threading.Event()
    error: list[BaseException] = []

    def writer() -> None:
        try:
            with Store.open(d.store, synchronous="NORMAL") as s:
                for i in range(0, len(ops), 5):
                    s.ingest(ops[i : i + 5])
        except BaseException as exc:
            error.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[int] = []
    try:
        for _ in range(200):  # bounded: the writer normally finishes first
            diag = diagnose(d)
            assert diag.healthy, diag.findings
            seen.append(diag.stats["ops"])
            if done.is_set():
                break
    finally:
        thread.join()
    assert not error, error
    assert diagnose(d).healthy
    assert seen == sorted(seen)  # snapshots only move forward


def test_cli(sample: Sample, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(cli, ["--data-dir", str(sample.dir.root), "doctor"])
    assert ok.exit_code == 0, ok.output
    assert "healthy" in ok.output and "integrity ok" in ok.output
    d = sample.copy(tmp_path / "bad")
    os.chmod(d.key, 0o644)
    tamper(d, ("DELETE FROM heads", ()))
    bad = runner.invoke(cli, ["doctor", str(d.root)])
    assert bad.exit_code == EXIT_CORRUPT
    lines = [ln for ln in bad.output.splitlines() if ln.startswith("ERROR")]
    assert len(lines) == 2 and any("perm.key" in ln for ln in lines)
    doc = json.loads(runner.invoke(cli, ["doctor", str(d.store), "--json"]).output)
    assert doc["healthy"] is False and doc["exit_code"] == EXIT_CORRUPT
    assert {f["check"] for f in doc["findings"]} == {"perm.key", "fold.heads", "equivocations"}
    # a wrong path or file is not damage (it was 5, "damaged or inconsistent store")
    missing = runner.invoke(cli, ["doctor", str(tmp_path / "nowhere")])
    assert missing.exit_code == EXIT_NOT_FOUND and "no data directory" in missing.output
    not_a_store = tmp_path / "genesis.json"
    not_a_store.write_text('{"gossipmind_genesis": 1}\n')
    wrong = runner.invoke(cli, ["doctor", str(not_a_store), "--json"])
    assert wrong.exit_code == EXIT_NOT_A_STORE, wrong.output
    assert [f["check"] for f in json.loads(wrong.output)["findings"]] == ["store.file"]
    other_db = tmp_path / "other.sqlite3"
    sqlite3.connect(other_db).execute("CREATE TABLE t (x)").connection.close()
    other = runner.invoke(cli, ["doctor", str(other_db)])
    assert other.exit_code == EXIT_NOT_A_STORE and "is not a gossipmind store" in other.output
    # a copy of a store cut short (a backup, named by hand) is damage, not a wrong file
    backup = tmp_path / "kb-backup.sqlite3"
    backup.write_bytes(sample.copy(tmp_path / "to-back-up").store.read_bytes()[:50])
    cut = runner.invoke(cli, ["doctor", str(backup)])
    assert cut.exit_code == EXIT_CORRUPT, cut.output
    # the data dir's own store, damaged, is still damage
    garbage = sample.copy(tmp_path / "garbage")
    garbage.store.write_bytes(b"not a database" * 100)
    assert runner.invoke(cli, ["doctor", str(garbage.store)]).exit_code == EXIT_CORRUPT
    assert runner.invoke(cli, ["doctor", str(garbage.root)]).exit_code == EXIT_CORRUPT


def test_many_problems_are_counted_but_not_all_listed(damaged: tuple[Sample, DataDir]) -> None:
    _, d = damaged
    tamper(d, ("UPDATE ops SET ts = ts + 1 WHERE kind != 'net.genesis'", ()))
    diag = checked(d)
    lines = only(diag, "op.columns")
    assert len(lines) == 21 and lines[-1] == "more op.columns problems (not listed)"
    assert diag.error_count == diag.stats["ops"] - 1 == diag.to_doc()["problems"]["op.columns"]


@pytest.mark.parametrize("content", ["", '{"network": "ab', "\x00\x01 not json", "[" * 100_000])
def test_a_damaged_genesis_file_is_a_warning_the_node_repairs(
    damaged: tuple[Sample, DataDir], content: str
) -> None:
    """The node rewrites a damaged genesis.json from its store (node/opening.py),
    so doctor warns and still calls the data dir healthy."""
    _, d = damaged
    d.genesis.write_text(content)
    diag = checked(d)
    assert diag.healthy and diag.exit_code == 0, diag.findings
    assert sorted((f.severity, f.check) for f in diag.findings) == [
        ("warning", "equivocations"),  # the sample's equivocators
        ("warning", "genesis.file"),
    ]


def test_a_damaged_genesis_file_naming_another_network_is_an_error(
    damaged: tuple[Sample, DataDir],
) -> None:
    _, d = damaged
    other = KB(seed=99).genesis.id.hex()
    d.genesis.write_text('{"network": "' + other + '", "op": "not hex"}')
    diag = checked(d)
    assert checks(diag) == {"genesis.file"} and "another network" in diag.errors[0].message
