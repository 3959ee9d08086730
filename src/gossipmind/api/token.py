"""The local API's bearer token: ``api.token`` in the data dir, mode 0600.

A node creates it on first start and reads it at every start. It can be rotated
while the node runs (:func:`rotate_token`, ``gossipmind token rotate``): the file
is replaced atomically with a new random token, and the running API
(:class:`TokenFile`) picks it up within :data:`RECHECK_S` — at once for a request
that presents a token other than the one it holds. From then on the old token
gets 401, and event streams opened with it end. A token file that becomes
unusable (not a regular file of this user, readable by others, too short or too
long, gone) makes the API refuse every request (503) until it is mended: it fails
closed, never open.

The file is read through one descriptor — opened without blocking, then checked
with ``fstat`` (a regular file, owned by this user, mode 0600, at most
:data:`MAX_TOKEN_FILE` bytes) and read — so what is checked is what is read, and a
FIFO or a huge file put in its place cannot stall the node.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path

from gossipmind.core.errors import ConfigError
from gossipmind.store.datadir import write_atomic

log = logging.getLogger("gossipmind.api")

MIN_TOKEN_CHARS = 16
MAX_TOKEN_FILE = 4096  # bytes: a token is 43 characters
RECHECK_S = 1.0  # s: the most a rotated token's predecessor stays valid


def usable(token: str) -> bool:
    """Whether ``token`` may be a bearer token (what the node would accept)."""
    return len(token) >= MIN_TOKEN_CHARS and token.isascii() and token.isprintable()


def read_token(path: Path) -> str:
    """The token in ``path``; ConfigError if the file is not a regular file of
    this user with mode 0600, cannot be read, or holds no usable token."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read the API token {path}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise ConfigError(
                f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path} has mode {mode:04o}; it must be 0600 (run `gossipmind token rotate`: "
                "while it was readable, others may have copied it)"
            )
        if st.st_size > MAX_TOKEN_FILE:
            raise ConfigError(f"{path} holds no usable token ({st.st_size} bytes)")
        data = os.read(fd, MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the API token {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    try:
        token = data.decode().strip()
    except UnicodeDecodeError:
        token = ""
    if len(data) > MAX_TOKEN_FILE or not usable(token):
        raise ConfigError(f"{path} holds no usable token")
    return token


def ensure_token(path: Path) -> str:
    """Read the API token (creating it, mode 0600, if missing); refuse a readable one."""
    if not path.exists() and not path.is_symlink():
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token
    return read_token(path)


def rotate_token(path: Path) -> None:
    """Replace the token in ``path`` with a new random one (atomically, mode 0600;
    created if missing). The new token is not returned: clients read the file.

    Only the node's user may do it (the owner of the token, else of the data dir):
    a token another user wrote, root by ``sudo``, is one the node refuses."""
    root = path.parent
    if not root.is_dir():
        raise ConfigError(f"no data dir at {root}")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a token file")
    owner = (path if path.exists() else root).stat().st_uid
    if owner != os.geteuid():
        raise ConfigError(
            f"{path if path.exists() else root} belongs to uid {owner}: rotate the token "
            f"as that user (e.g. `sudo -u '#{owner}' gossipmind token rotate`), or the node "
            "would refuse it"
        )
    try:
        write_atomic(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    except OSError as exc:
        raise ConfigError(f"cannot rotate the API token {path}: {exc.strerror or exc}") from exc


class TokenFile:
    """The token a running API accepts, kept in step with the file.

    :meth:`current` reads the file again at most every :data:`RECHECK_S`, or at
    once when asked to (``force``: a request presented another token). A read is
    one open, ``fstat`` and read of a few bytes: microseconds beside the request
    that asks for it, so a flood of wrong tokens costs the node no more than the
    requests themselves.
    ``version`` counts the changes of token, so an open event stream can tell it
    was rotated; ``problem`` says why the file is unusable (then ``current`` is
    None).
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._token = ensure_token(path)
        self._checked = clock()
        self.version = 0
        self.problem: str | None = None

    def current(self, *, force: bool = False) -> str | None:
        """The token to accept now, or None while the file is unusable."""
        now = self._clock()
        if force or now - self._checked >= RECHECK_S:
            self._checked = now
            self._refresh()
        return None if self.problem else self._token

    def _refresh(self) -> None:
        try:
            token = read_token(self.path)
        except ConfigError as exc:
            if str(exc) != self.problem:
                log.warning("API refuses every request until its token file is mended: %s", exc)
            self.problem = str(exc)
            return
        if not hmac.compare_digest(token.encode(), self._token.encode()):
            self.version += 1
            log.info("API token rotated: requests with the previous one now get 401")
        elif self.problem is not None:
            log.info("API token file usable again (the same token)")
        self._token, self.problem = token, None
