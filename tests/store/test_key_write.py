"""`write_key` writes a key whole or not at all, also on a filesystem without hard
links (where ``os.link`` fails with EPERM), and never over an existing key."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from gossipmind.core.errors import IdentityError
from gossipmind.store.keyfile import new_identity, read_key, write_key
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB


def no_links(monkeypatch: pytest.MonkeyPatch) -> None:
    def link(*_a: object, **_k: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", link)


def test_a_key_is_written_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_links(monkeypatch)
    ident = new_identity()
    path = tmp_path / "identity.key"
    write_key(path, ident)
    assert read_key(path).public == ident.public
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        write_key(path, new_identity())
    assert read_key(path).public == ident.public


def test_a_failed_key_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.fstat(fd).st_size > 0:  # the key's data, not a directory
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "identity.key"
    for links in (True, False):
        if not links:
            no_links(monkeypatch)
        with pytest.raises(IdentityError, match=r"cannot write .*No space left on device"):
            write_key(path, new_identity())
        assert list(tmp_path.iterdir()) == []


def test_a_store_is_created_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_links(monkeypatch)
    kb = KB(seed=41)
    path = tmp_path / "kb.sqlite3"
    Store.create(path, kb.genesis).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kb.sqlite3", "kb.sqlite3.lock"]
    with Store.open(path) as store:
        assert store.replica.net == kb.genesis.id
