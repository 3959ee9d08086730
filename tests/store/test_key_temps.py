"""`write_key`'s temporary file holds a whole private key: a write killed before
it removed that file (SIGKILL, OOM, power loss) left the copy on disk for good,
and a second ``init`` wrote a new key beside it. The next key write (``init``)
and the next read of the key (a node's start, any command) now remove such
files — never the one of a write under way (one key write at a time per
directory, under a lock on the directory that a dead process no longer holds).
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gossipmind.cli.main import cli
from gossipmind.core.errors import IdentityError
from gossipmind.store import keyfile
from gossipmind.store.keyfile import new_identity, read_key, write_key

BOUND = 30.0  # s: the most a child process may take

KILLED_AT = """
import os, signal, sys
from pathlib import Path
from gossipmind.store import keyfile

def kill(*_a):
    os.kill(os.getpid(), signal.SIGKILL)

setattr(os if hasattr(os, sys.argv[2]) else keyfile, sys.argv[2], kill)
keyfile.write_key(Path(sys.argv[1]), keyfile.new_identity())
"""


def killed_write(path: Path, at: str) -> None:
    """A ``write_key(path)`` killed (SIGKILL) where it calls ``at``."""
    args = [sys.executable, "-c", KILLED_AT, str(path), at]
    out = subprocess.run(args, capture_output=True, text=True, timeout=BOUND, check=False)
    assert out.returncode == -9, out.stderr


def strays(key: Path) -> list[Path]:
    """Temporary files of key writes: ``.<name>.<8 random characters>.tmp``."""
    return sorted(key.parent.glob(f".{key.name}.????????.tmp"))


def names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_a_key_copy_a_killed_init_left_is_removed_by_the_next_init(tmp_path: Path) -> None:
    key = tmp_path / "identity.key"
    killed_write(key, "link")  # the key was written whole into its temporary file
    [stray] = strays(key)
    assert stray.stat().st_size > 0 and stat.S_IMODE(stray.stat().st_mode) == 0o600
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "init", "--json"])
    assert result.exit_code == 0, result.output
    assert strays(key) == []
    assert ".identity.key." not in " ".join(names(tmp_path))
    read_key(key)


def test_a_key_copy_beside_the_key_is_removed_when_the_key_is_read(tmp_path: Path) -> None:
    """Killed after the link, before the temporary file was removed: the key is
    there, and so is a second name of it. A node's start reads the key."""
    key = tmp_path / "identity.key"
    killed_write(key, "fsync_path")
    assert len(strays(key)) == 1 and key.exists()
    public = read_key(key).public
    assert strays(key) == []
    assert names(tmp_path) == ["identity.key"]
    assert read_key(key).public == public


def test_a_second_init_that_refuses_still_removes_the_copy(tmp_path: Path) -> None:
    key = tmp_path / "identity.key"
    killed_write(key, "fsync_path")
    before = key.read_bytes()
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        write_key(key, new_identity())
    assert names(tmp_path) == ["identity.key"] and key.read_bytes() == before


PAUSED = """
import os, sys
from pathlib import Path
from gossipmind.store import keyfile

real_link = os.link

def link(src, dst):
    print("linking", flush=True)
    sys.stdin.readline()
    real_link(src, dst)

os.link = link
keyfile.write_key(Path(sys.argv[1]), keyfile.new_identity())
print("written", flush=True)
"""


def test_the_temporary_file_of_a_write_under_way_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "identity.key"
    args = [sys.executable, "-c", PAUSED, str(key)]
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as writer:
        try:
            assert writer.stdout is not None and writer.stdin is not None
            assert writer.stdout.readline().strip() == "linking"
            [tmp] = strays(key)
            with pytest.raises(IdentityError, match="no key file"):
                read_key(key)  # the write holds the lock: nothing is removed
            monkeypatch.setattr(keyfile, "LOCK_WAIT_S", 0.2)
            with pytest.raises(IdentityError, match="another process has been writing a key"):
                write_key(key, new_identity())
            assert strays(key) == [tmp]
            writer.stdin.write("\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "written"
            writer.wait(BOUND)
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait(BOUND)
    assert writer.returncode == 0
    assert names(tmp_path) == ["identity.key"]
    read_key(key)


def test_only_the_keys_own_temporary_files_are_taken(tmp_path: Path) -> None:
    key = tmp_path / "identity.key"
    others = [
        ".identity.key.tmp",
        ".other.key.abc12345.tmp",
        "identity.key.abc.tmp",
        ".identity.keyx.a.tmp",
    ]
    for name in others:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".identity.key.dir00000.tmp").mkdir()
    assert keyfile.temp_files(key) == [tmp_path / ".identity.key.dir00000.tmp"]
    write_key(key, new_identity())
    assert names(tmp_path) == sorted([*others, ".identity.key.dir00000.tmp", "identity.key"])
