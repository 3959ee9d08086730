"""``write_atomic``: a crash while a data-dir file is written leaves the old file or
the new one, never a part of one, and no temp file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gossipmind.store import datadir
from gossipmind.store.datadir import write_atomic


def test_an_atomic_write_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    path.write_text("old\n")
    write_atomic(path, "new\n")
    assert path.read_text() == "new\n" and os.listdir(tmp_path) == ["genesis.json"]


def test_an_atomic_write_that_fails_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "genesis.json"
    path.write_text("old\n")

    def crash(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(datadir.os, "fsync", crash)
    with pytest.raises(OSError):
        write_atomic(path, "new\n")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["genesis.json"]
