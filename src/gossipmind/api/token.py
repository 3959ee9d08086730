"""The local API's bearer token: ``api.token`` in the data dir, mode 0600.

A node creates it on first start and reads it at every start. It can be rotated
while the node runs (:func:`rotate_token`, ``gossipmind token rotate``): the file
is replaced atomically with a new random token, and the running API
(:class:`TokenFile`) picks it up within :data:`RECHECK_S` — at once for a request
that presents a token other than the one it holds. From then on the old token
gets 401, and event streams opened with it end. A token file that becomes
unusable (unreadable, readable by others, too short) makes the API refuse every
request (503) until it is mended: it fails closed, never open.
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
RECHECK_S = 1.0  # s: the most a rotated token's predecessor stays valid


def read_token(path: Path) -> str:
    """The token in ``path``; ConfigError if the file is readable by others,
    cannot be read, or holds no usable token."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"{path} has mode {mode:04o}; it must be 0600 (chmod 600 {path})")
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the API token {path}: {exc}") from exc
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        raise ConfigError(f"{path} holds no usable token")
    return token


def ensure_token(path: Path) -> str:
    """Read the API token (creating it, mode 0600, if missing); refuse a readable one."""
    if not path.exists():
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token
    return read_token(path)


def rotate_token(path: Path) -> None:
    """Replace the token in ``path`` with a new random one (atomically, mode 0600;
    created if missing). The new token is not returned: clients read the file."""
    if not path.parent.is_dir():
        raise ConfigError(f"no data dir at {path.parent}")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a token file")
    try:
        write_atomic(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    except OSError as exc:
        raise ConfigError(f"cannot rotate the API token {path}: {exc}") from exc


def _signature(path: Path) -> tuple[int, int, int, int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)


class TokenFile:
    """The token a running API accepts, kept in step with the file.

    :meth:`current` looks at the file (one ``stat``) at most every
    :data:`RECHECK_S`, or at once when asked to (``force``: a request presented
    another token); it re-reads the token only when the file changed (``reads``
    counts the reads). ``version`` counts the changes of token, so an open event
    stream can tell it was rotated. ``problem`` says why the file is unusable
    (then ``current`` is None).
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._token = ensure_token(path)
        self._sig = _signature(path)
        self._checked = clock()
        self.version = 0
        self.reads = 0
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
            sig = _signature(self.path)
        except OSError as exc:
            self._unusable(f"cannot read the API token {self.path}: {exc.strerror or exc}")
            return
        if sig == self._sig and self.problem is None:
            return
        try:
            token = read_token(self.path)
        except ConfigError as exc:
            self._sig = sig
            self._unusable(str(exc))
            return
        self.reads += 1
        if not hmac.compare_digest(token.encode(), self._token.encode()):
            self.version += 1
            log.info("API token rotated: requests with the previous one now get 401")
        elif self.problem is not None:
            log.info("API token file usable again")
        self._token, self._sig, self.problem = token, sig, None

    def _unusable(self, problem: str) -> None:
        if problem != self.problem:
            log.warning("API refuses every request until its token file is mended: %s", problem)
        self.problem = problem
