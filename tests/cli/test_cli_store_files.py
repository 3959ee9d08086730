"""Writing commands that meet each other at the store's lock, and the key file that
`gossipmind init` writes (real processes, real files):

* writing commands run in parallel (an agent's ``xargs -P``) with no node all
  succeed: a command that finds the store held waits for it, bounded;
* one held longer than that fails with an error that names the real cause;
* `init` on a full disk leaves no key file behind (a full tmpfs: root only), and
  an empty key file says how to recover.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossipmind.store.datadir import DataDir
from gossipmind.store.queries import Reader
from gossipmind.store.sqlite import Store

CLI = [sys.executable, "-c", "from gossipmind.cli.main import main; main()"]


def gm(d: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--data-dir", str(d), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def report_cmd(d: Path, i: int) -> list[str]:
    return [*CLI, "--data-dir", str(d), "report", "--service", "s", "--operation", f"op{i}"]


@pytest.fixture
def admin(tmp_path: Path) -> Path:
    d = tmp_path / "admin"
    assert gm(d, "init").returncode == 0
    made = gm(d, "network", "create", "--name", "locks")
    assert made.returncode == 0, made.stderr
    return d


def ops(d: Path) -> int:
    with Reader(DataDir(d).store) as r:
        return int(r.status()["ops"])


def test_parallel_writing_commands_without_a_node_all_succeed(admin: Path) -> None:
    """Before: of four `report`s started together, those that lost the lock race
    failed at once (exit 5, "held by a running node that serves no local API")
    and their reports were lost (ops 6 -> 8, not 10)."""
    before = ops(admin)
    for _ in range(2):  # two rounds of six at once
        procs = [
            subprocess.Popen(report_cmd(admin, i), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for i in range(6)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, [err.decode() for _, err in outs]
    assert ops(admin) == before + 12


def test_a_writing_command_waits_for_another_that_holds_the_store(admin: Path) -> None:
    """The store is held (here by this test, as by another command) when the
    command starts and let go of 2 s later: the command waits for it instead of
    failing at once."""
    before = ops(admin)
    with Store.open(DataDir(admin).store):
        proc = subprocess.Popen(report_cmd(admin, 99), stderr=subprocess.PIPE, text=True)
        time.sleep(2.0)  # held for 2 s after the command started; it waits up to 5 s
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert ops(admin) == before + 1


def test_a_store_held_too_long_names_the_real_cause(admin: Path) -> None:
    """Held for longer than a command waits, with no node API in the data dir: the
    error says another process (another command, or a node without an API)
    holds it and that nothing was written; it no longer blames a running node."""
    before = ops(admin)
    with Store.open(DataDir(admin).store):
        out = gm(admin, "report", "--service", "s", "--operation", "late")
    assert out.returncode == 5, out.stderr
    assert "another gossipmind command, or a node started with --no-api" in out.stderr
    assert "for more than 5 s" in out.stderr and "nothing was written" in out.stderr
    assert ops(admin) == before


@pytest.fixture
def full_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]
    done = subprocess.run(mount, capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        (mnt / "dd").mkdir(mode=0o700)
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for _ in range(256):  # at most 1 MiB: bounded
                try:
                    os.write(fd, b"\0" * 4096)
                except OSError:
                    break
        finally:
            os.close(fd)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, check=False)


def test_init_on_a_full_disk_leaves_no_key_file(full_tmpfs: Path) -> None:
    """Before: `init` failed with a bare "No space left on device" and left an
    empty identity.key; the next `init` refused to overwrite it and every command
    said "key file is not a gossipmind key: empty input"."""
    d = full_tmpfs / "dd"
    out = gm(d, "init")
    assert out.returncode == 6, out.stderr
    assert f"cannot write {d / 'identity.key'}" in out.stderr, out.stderr
    assert "No space left on device" in out.stderr
    assert sorted(p.name for p in d.iterdir()) == []  # no key, no temporary file
    (full_tmpfs / "filler").unlink()
    again = gm(d, "init")
    assert again.returncode == 0, again.stderr
    assert gm(d, "whoami").returncode == 0


def test_an_empty_key_file_says_how_to_recover(tmp_path: Path) -> None:
    d = tmp_path / "dd"
    d.mkdir(mode=0o700)
    key = d / "identity.key"
    key.touch(mode=0o600)
    out = gm(d, "whoami")
    assert out.returncode == 6, out.stderr
    assert f"{key} is empty: it holds no key" in out.stderr
    assert "run `gossipmind init`" in out.stderr


def test_a_data_dir_whose_path_holds_uri_characters_holds_its_store(tmp_path: Path) -> None:
    """The SQLite URI was built from the path unquoted: `network create` in a data
    dir named with `#`, `?` or `%` made a stray database outside it and failed."""
    d = tmp_path / "a#b?c%d"
    assert gm(d, "init").returncode == 0
    made = gm(d, "network", "create", "--name", "t")
    assert made.returncode == 0, made.stderr
    assert (d / "kb.sqlite3").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a#b?c%d"]  # nothing stray
    status = gm(d, "status", "--json")
    assert status.returncode == 0 and '"ops": 1' in status.stdout, status.stdout


def test_a_store_that_is_a_directory_gets_one_diagnosis_everywhere(admin: Path) -> None:
    """`status` said "is a directory, not a gossipmind store"; the node said "disk I/O
    error (disk full, permissions or a read-only filesystem?)" and `doctor` "no store"."""
    store = DataDir(admin).store
    store.unlink()
    store.mkdir()
    said = f"{store} is a directory, not a gossipmind store"
    for args in (("status",), ("node", "--no-api"), ("doctor",)):
        out = gm(admin, *args)
        assert out.returncode == 5, (args, out.returncode, out.stdout, out.stderr)
        assert said in out.stdout + out.stderr, (args, out.stdout, out.stderr)
        assert "disk" not in out.stderr and "no store" not in out.stdout, (args, out)
    assert store.is_dir() and not any(store.iterdir())


def test_a_node_toml_that_is_a_directory_is_named(admin: Path) -> None:
    """It gave "…/node.toml: [Errno 21] Is a directory: '…/node.toml'"."""
    (admin / "node.toml").mkdir()
    out = gm(admin, "node", "--no-api")
    assert out.returncode == 4, (out.returncode, out.stderr)
    assert out.stderr.strip() == f"error: {admin / 'node.toml'} is a directory, not a config file"


@pytest.mark.parametrize(
    "content",
    [b"\x01garbage after a value", b"not a key at all\n" * 3, b"\xa1av\x02"],
    ids=["trailing-bytes", "text", "another-version"],
)
def test_a_key_file_that_is_not_a_key_is_named_with_what_to_do(
    tmp_path: Path, content: bytes
) -> None:
    """It said "key file is not a gossipmind key: trailing bytes after the value":
    no path (unlike every other key error), and a reason no operator can act on."""
    d = tmp_path / "dd"
    d.mkdir(mode=0o700)
    key = d / "identity.key"
    key.write_bytes(content)
    key.chmod(0o600)
    for args in (("whoami",), ("node", "--no-api")):
        out = gm(d, *args)
        assert out.returncode == 6, (args, out.stderr)
        assert out.stderr.strip() == (
            f"error: {key} is not a gossipmind key file (damaged, or another kind of file): "
            "put back the key from your backup, or delete it and run `gossipmind init` for "
            "a new identity"
        ), (args, out.stderr)
    assert key.read_bytes() == content


def test_a_genesis_file_of_another_version_says_which(admin: Path, tmp_path: Path) -> None:
    """It said "is not a gossipmind genesis file" for `"gossipmind_genesis": 2`."""
    doc = json.loads((admin / "genesis.json").read_text())
    future = tmp_path / "future.json"
    future.write_text(json.dumps({**doc, "gossipmind_genesis": 2}))
    d = tmp_path / "joiner"
    assert gm(d, "init").returncode == 0
    out = gm(d, "network", "join", str(future))
    assert out.returncode == 4, out.stderr
    assert out.stderr.strip() == (
        f"error: {future}: unsupported genesis file version 2 (this gossipmind reads version 1)"
    )
    assert not (d / "kb.sqlite3").exists()
