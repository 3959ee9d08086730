"""Key files on disk: written 0600, refused if readable by others."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from pathlib import Path

from gossipmind.core.errors import IdentityError
from gossipmind.core.identity import Identity, NotAKey, dump_key, is_encrypted, load_key
from gossipmind.store.datadir import fsync_path
from gossipmind.store.sqlfile import NO_HARD_LINKS, flock_within

LOCK_WAIT_S = 5.0  # s a key write waits for another one in the same directory


def temp_files(path: Path) -> list[Path]:
    """The temporary files of :func:`write_key` for ``path`` in its directory:
    ``.<name>.<8 random characters>.tmp`` (each holds, or held, a whole key)."""
    prefix = f".{path.name}."
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    return sorted(
        path.parent / n
        for n in names
        if n.startswith(prefix) and n.endswith(".tmp") and len(n) > len(prefix) + 4
    )


def _remove_temps(path: Path) -> None:
    """Remove the temporary files a killed :func:`write_key` left (only while the
    directory's key lock is held: no write is under way)."""
    for stray in temp_files(path):
        with contextlib.suppress(OSError):  # (a directory of that name is left alone)
            stray.unlink()


def _lock_keys(path: Path, *, wait: float) -> int | None:
    """An fd holding the key lock of ``path``'s directory (``flock`` on the
    directory itself; released when the fd is closed or the process dies), taken
    within ``wait`` s; None where there is no such directory or the filesystem
    has no such locks, or (``wait=0``) while another process holds it."""
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None  # no such directory: the write says so
    deadline = time.monotonic() + wait
    try:
        if flock_within(fd, wait):
            return fd
    except OSError:
        pass  # no locks here (nothing is removed)
    os.close(fd)
    if wait > 0 and time.monotonic() >= deadline:
        raise IdentityError(
            f"another process has been writing a key in {path.parent} for more than "
            f"{wait:g} s, so nothing was written; try again"
        )
    return None


def write_key(path: Path, identity: Identity, passphrase: str | None = None) -> None:
    """Create ``path`` with mode 0600; never overwrite an existing key.

    The key is written whole into a temporary file of the same directory (mode
    0600 from its creation, named as :func:`temp_files` says), fsynced, and then
    linked to ``path`` (``os.link`` refuses an existing file): a failed write (a
    full disk) or a kill leaves no key file, never an empty or partial one. One
    key write at a time per directory; each first removes the temporary files
    that killed writes left there."""
    data = dump_key(identity, passphrase, os.urandom(16), os.urandom(12))
    fd = _lock_keys(path, wait=LOCK_WAIT_S)
    try:
        if fd is not None:
            _remove_temps(path)
        _write_key(path, data)
    finally:
        if fd is not None:
            os.close(fd)


def _write_key(path: Path, data: bytes) -> None:
    if os.path.lexists(path):
        raise IdentityError(f"{path} already exists; refusing to overwrite a key")
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:  # mkstemp: mode 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            _write_new(path, data)  # a filesystem without hard links
        fsync_path(path.parent)
    except FileExistsError as exc:
        raise IdentityError(f"{path} already exists; refusing to overwrite a key") from exc
    except OSError as exc:
        raise IdentityError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (never over an existing file) holding ``data``; remove it if
    the write fails: the file is ours, ``O_EXCL`` created it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def check_private(path: Path) -> None:
    """Raise unless ``path`` is a regular file readable only by its owner."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise IdentityError(f"no key file at {path}; run `gossipmind init` first") from exc
    if not stat.S_ISREG(st.st_mode):
        raise IdentityError(f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise IdentityError(
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600 "
            f"(run: chmod 600 {path})"
        )


def _key_bytes(path: Path) -> bytes:
    check_private(path)
    data = path.read_bytes()
    if not data:
        raise IdentityError(
            f"{path} is empty: it holds no key (a `gossipmind init` that failed, e.g. on a "
            "full disk, or a truncated copy). Delete it and run `gossipmind init` for a new "
            "identity, or put back the key from your backup"
        )
    return data


def read_key(path: Path, passphrase: str | None = None) -> Identity:
    """The identity in ``path``. Removes the temporary files a killed key write
    left beside it, unless a key write is under way there."""
    fd = _lock_keys(path, wait=0)
    if fd is not None:
        try:
            _remove_temps(path)
        finally:
            os.close(fd)
    data = _key_bytes(path)
    try:
        return load_key(data, passphrase)
    except NotAKey as exc:
        raise _not_a_key(path) from exc


def key_is_encrypted(path: Path) -> bool:
    data = _key_bytes(path)
    try:
        return is_encrypted(data)
    except NotAKey as exc:
        raise _not_a_key(path) from exc


def _not_a_key(path: Path) -> IdentityError:
    return IdentityError(
        f"{path} is not a gossipmind key file (damaged, or another kind of file): put "
        "back the key from your backup, or delete it and run `gossipmind init` for a new "
        "identity"
    )


def new_identity() -> Identity:
    return Identity(os.urandom(32))
