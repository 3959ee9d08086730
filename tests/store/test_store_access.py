"""A store that cannot be reached is not a corrupt store (real filesystems: a full
1 MiB tmpfs, a read-only bind mount; both need root, else the tests are skipped).

* The inspection commands read a stopped store without creating ``-wal``/``-shm``
  files (an ``immutable`` read), so they work on a full disk and on a read-only
  filesystem, and leave nothing behind that would make doctor see damage.
* A write that cannot be made says why (the disk is full, the filesystem is
  read-only), never "corrupt"; doctor reports a store it cannot read as
  ``store.open`` with exit status 1, not as damage (5).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossipmind.core.errors import StoreError
from gossipmind.store.datadir import DataDir, dump_genesis
from gossipmind.store.diagnosis import EXIT_UNREADABLE
from gossipmind.store.doctor import diagnose
from gossipmind.store.keyfile import read_key, write_key
from gossipmind.store.queries import Reader
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, sample_report

CLI = [sys.executable, "-c", "from gossipmind.cli.main import main; main()"]


def gm(d: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--data-dir", str(d), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


def umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], capture_output=True, check=False)


def stopped_store(root: Path) -> DataDir:
    """A stopped node's data dir: key, genesis and a closed store (no -wal)."""
    kb = KB(seed=21)
    for i in range(5):
        kb.report("admin", service="s", operation=f"o{i}")
    d = DataDir(root)
    d.ensure()
    write_key(d.key, kb.admin)
    d.genesis.write_text(dump_genesis(kb.genesis))
    with Store.create(d.store, kb.genesis) as store:
        store.ingest(kb.ops[1:])
    assert not (d.root / "kb.sqlite3-wal").exists()
    return d


def side_files(d: DataDir) -> list[str]:
    return sorted(p.name for p in d.root.iterdir() if p.name.startswith("kb.sqlite3-"))


def fill(filler: Path) -> None:
    """Write ``filler`` until the filesystem is full (at most 1 MiB: bounded)."""
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(256):
            try:
                os.write(fd, b"\0" * 4096)
            except OSError:
                break
    finally:
        os.close(fd)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[tuple[DataDir, Path]]:
    """A stopped data dir on a 1 MiB tmpfs filled to the last block."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        src = stopped_store(tmp_path / "src")
        shutil.copytree(src.root, mnt / "dd")
        filler = mnt / "filler"
        fill(filler)
        yield DataDir(mnt / "dd"), filler
    finally:
        umount(mnt)


def test_a_full_disk_is_not_corruption(full_disk: tuple[DataDir, Path]) -> None:
    """Before: `status` said "is corrupt or not an SQLite database: disk I/O error"
    (exit 5) and left an empty -wal and -shm, after which doctor said "cannot be
    read" (exit 5) about a store that was never damaged."""
    d, filler = full_disk
    with Reader(d.store) as r:
        assert r.status()["ops"] == 6
    status = gm(d.root, "status")
    assert status.returncode == 0, status.stderr
    assert side_files(d) == []  # the inspection created nothing
    diag = diagnose(d)
    assert diag.healthy and diag.exit_code == 0, diag.errors
    # a write cannot be made: it says why, and that is not "corrupt"
    with pytest.raises(StoreError) as err:
        Store.open(d.store)
    assert "the disk is full" in str(err.value) and "corrupt" not in str(err.value)
    report = gm(d.root, "report", "--service", "s", "--operation", "o")
    assert report.returncode == 5, report.stderr
    assert "the disk is full" in report.stderr and "corrupt" not in report.stderr
    # what the failed writes left (an empty -wal, a -shm) changes nothing for readers
    status = gm(d.root, "status")
    assert status.returncode == 0, status.stderr
    diag = diagnose(d)
    assert diag.healthy and diag.exit_code == 0, diag.errors
    filler.unlink()
    with Store.open(d.store) as store:
        assert len(store.replica.meta) == 6


def test_a_store_with_frames_in_its_wal_on_a_full_disk_is_unreadable_not_damaged(
    full_disk: tuple[DataDir, Path],
) -> None:
    """A node killed on a full disk: its -wal holds frames, its -shm is gone. Reading
    needs the -shm, which cannot be created: doctor says so (store.open, exit 1)."""
    d, filler = full_disk
    filler.unlink()
    with Store.open(d.store) as store:  # a writer with frames in its -wal...
        store.conn.execute("PRAGMA wal_autocheckpoint = 0")
        store.create_op(read_key(d.key), "pattern.report", sample_report(service="late"), 1)
        wal = (d.root / "kb.sqlite3-wal").read_bytes()
    assert wal
    (d.root / "kb.sqlite3-wal").write_bytes(wal)  # ...killed: the -wal is left, no -shm
    (d.root / "kb.sqlite3-shm").unlink(missing_ok=True)
    fill(filler)
    diag = diagnose(d)
    assert [f.check for f in diag.errors] == ["store.open"], diag.errors
    assert diag.exit_code == EXIT_UNREADABLE
    assert "could not be checked" in diag.errors[0].message
    status = gm(d.root, "status")
    assert status.returncode == 5 and "corrupt" not in status.stderr, status.stderr
    assert "cannot read" in status.stderr and "the disk is full" in status.stderr


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[DataDir]:
    """A stopped data dir seen through a read-only bind mount (a backup on
    read-only media, operations.md §9)."""
    src = stopped_store(tmp_path / "src")
    ro = tmp_path / "ro"
    ro.mkdir()
    if not mount("--bind", str(src.root), str(ro)):
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        if not mount("-o", "remount,bind,ro", str(ro)):
            pytest.skip("cannot remount read-only here")
        yield DataDir(ro)
    finally:
        umount(ro)


def test_a_read_only_filesystem_is_readable_and_not_corruption(read_only: DataDir) -> None:
    """Before: `status` and `patterns` said "is corrupt or not an SQLite database:
    unable to open database file" (exit 5)."""
    d = read_only
    assert not os.access(d.root, os.W_OK)
    for args in (("status",), ("patterns",), ("log",)):
        out = gm(d.root, *args)
        assert out.returncode == 0, (args, out.stderr)
    diag = diagnose(d)
    assert diag.healthy, diag.errors
    with pytest.raises(StoreError) as err:
        Store.open(d.store)
    assert "read-only filesystem" in str(err.value) and "corrupt" not in str(err.value)
