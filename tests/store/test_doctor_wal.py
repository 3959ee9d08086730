"""`gossipmind doctor` on a write-ahead log cut short (a truncated copy of a killed
node's data dir, a damaged disk): SQLite reads the store as of the last whole
frame and says nothing, so the committed transactions after it vanish."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gossipmind.store import doctor
from gossipmind.store.datadir import DataDir, dump_genesis
from gossipmind.store.diagnosis import Diagnosis
from gossipmind.store.doctor import EXIT_CORRUPT, diagnose
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB


def crash_image(root: Path) -> tuple[DataDir, int]:
    """A data dir as a SIGKILL leaves it: frames in the -wal, its index in the -shm;
    and how many ops it holds."""
    kb = KB(seed=7)
    kb.grant("admin", "agent", "member")
    kb.sync("admin", "agent")
    for i in range(60):
        kb.report("agent", template=f"wal {i} <*>")
    live, image = DataDir(root / "live"), DataDir(root / "image")
    live.ensure()
    image.ensure()
    with Store.create(live.store, kb.genesis, synchronous="NORMAL") as s:
        for i in range(1, len(kb.ops), 5):
            s.ingest(kb.ops[i : i + 5])  # one transaction (frames) each
        for suffix in ("", "-wal", "-shm"):  # copied while the writer holds them
            shutil.copy(f"{live.store}{suffix}", f"{image.store}{suffix}")
    image.genesis.write_text(dump_genesis(kb.genesis))
    return image, len(kb.ops)


def test_a_whole_crash_image_is_healthy(tmp_path: Path) -> None:
    image, ops = crash_image(tmp_path)
    diag = diagnose(image)
    assert not diag.errors and diag.stats["ops"] == ops


@pytest.mark.parametrize("cut", [1000, 10**9, -16])  # inside a frame, to 0, to 16 bytes
def test_a_wal_cut_short_is_damage(tmp_path: Path, cut: int) -> None:
    image, _ = crash_image(tmp_path)
    wal = Path(f"{image.store}-wal")
    size = max(wal.stat().st_size - cut, 0) if cut > 0 else -cut
    with wal.open("r+b") as f:
        f.truncate(size)
    files = {p.name: p.read_bytes() for p in image.root.iterdir()}
    for _ in range(2):  # the same verdict again: doctor let SQLite rebuild the index
        diag = diagnose(image)
        assert "wal.truncated" in {f.check for f in diag.errors}
        assert diag.exit_code == EXIT_CORRUPT
    assert {p.name: p.read_bytes() for p in image.root.iterdir()} == files


def test_a_running_stores_log_restarted_while_it_is_read_is_not_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """doctor reads a running node's -shm, then the -wal's header, then its size. A
    commit that restarts the log meanwhile (its frames all checkpointed) writes a
    new header, then truncates the file to ``journal_size_limit``: a header read
    before and a size read after said "cut short" (exit 5) of a healthy store."""
    db = tmp_path / "store.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA journal_size_limit = 0")
    conn.execute("CREATE TABLE t (x BLOB)")
    for _ in range(50):
        conn.execute("INSERT INTO t VALUES (randomblob(3000))")
    real_open = Path.open

    class Racing:  # the -wal as doctor reads it: the writer's commit lands in between
        def __init__(self, f: Any) -> None:
            self.f = f
            self.calls = 0

        def __enter__(self) -> Racing:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def _between(self) -> None:
            self.calls += 1
            if self.calls == 2:  # after doctor's first read of the file, before its next
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                conn.execute("INSERT INTO t VALUES (1)")  # restarts the log

        def read(self, n: int) -> bytes:
            self._between()
            return bytes(self.f.read(n))

        def seek(self, *args: int) -> int:
            self._between()
            return int(self.f.seek(*args))

    def opening(self: Path, mode: str = "r", *args: Any, **kw: Any) -> Any:
        f = real_open(self, mode, *args, **kw)
        return Racing(f) if str(self).endswith("-wal") else f

    try:
        monkeypatch.setattr(Path, "open", opening)
        diag = Diagnosis(tmp_path)
        assert not doctor._wal_cut(db, diag), [f.check for f in diag.errors]
    finally:
        monkeypatch.undo()
        conn.close()
