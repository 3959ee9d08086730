"""Key files on disk: written 0600, refused if readable by others."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gossipmind.core.errors import IdentityError
from gossipmind.core.identity import Identity, dump_key, is_encrypted, load_key


def write_key(path: Path, identity: Identity, passphrase: str | None = None) -> None:
    """Create ``path`` with mode 0600; never overwrite an existing key."""
    data = dump_key(identity, passphrase, os.urandom(16), os.urandom(12))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise IdentityError(f"{path} already exists; refusing to overwrite a key") from exc
    except OSError as exc:
        raise IdentityError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


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


def read_key(path: Path, passphrase: str | None = None) -> Identity:
    check_private(path)
    return load_key(path.read_bytes(), passphrase)


def key_is_encrypted(path: Path) -> bool:
    check_private(path)
    return is_encrypted(path.read_bytes())


def new_identity() -> Identity:
    return Identity(os.urandom(32))
