"""Where a node process's logs and status lines go: stderr and stdout, or files
that stay bounded however long the node runs.

``--log-file PATH``: the JSON logs go to PATH instead of stderr. With
``--log-max-bytes N`` (N > 0) the file is rotated by size (stdlib
``RotatingFileHandler``): PATH is renamed PATH.1 (PATH.1 → PATH.2 …) when the
next line would take it to N bytes, and the oldest of ``--log-backups`` old
files is deleted; so at most backups + 1 files of at most N bytes each (a
single line longer than N, a long traceback, makes one file that long). With
``--log-max-bytes 0`` the node does not rotate: the file is reopened whenever
it is moved or deleted (``WatchedFileHandler``), for an external logrotate
without ``copytruncate``.

``--status-file PATH``: the periodic status lines (``--status-every``) replace
PATH (a temp file renamed over it) instead of going to stdout; PATH holds the
latest line of each node of the process, so its size does not grow.

Everything is checked before the node starts: a bad value is a clear error
that creates no file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import logging.handlers
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

from gossipmind.core.errors import ConfigError

log = logging.getLogger("gossipmind.node")

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
MIN_MAX_BYTES = 1024  # below that, a few lines per file: a typo, not a setting
MAX_BACKUPS = 1000


def size_problem(max_bytes: int) -> str | None:
    """Why ``max_bytes`` is no rotation size; None if it is one (0: no rotation)."""
    if max_bytes == 0 or max_bytes >= MIN_MAX_BYTES:
        return None
    return f"{max_bytes} bytes: must be 0 (no rotation) or at least {MIN_MAX_BYTES}"


def backups_problem(backups: int) -> str | None:
    """Why ``backups`` is no count of old log files to keep; None if it is one.

    0 is refused: ``RotatingFileHandler`` with ``backupCount=0`` never rotates (the
    file grows without bound), the very thing rotation is for."""
    if 1 <= backups <= MAX_BACKUPS:
        return None
    return f"{backups} old files: must be 1 to {MAX_BACKUPS} (0 would never rotate)"


def path_problem(path: Path, *, rotated: bool = True) -> str | None:
    """Why the node could not write (and rotate) a file at ``path``; None if it can.

    Nothing is created. The directory must exist and be writable (rotation and the
    status file's temp file create files beside it); an existing file must be a
    regular, writable file (not a directory, FIFO or device). ``rotated``: also the
    rotated copies PATH.1, PATH.2 … must not be directories."""
    parent = path.parent
    if not parent.is_dir():
        return f"no directory {parent}"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"directory {parent} is not writable"
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        return exc.strerror or str(exc)
    if st is not None and stat.S_ISDIR(st.st_mode):
        return f"{path} is a directory: name a file"
    if st is not None and not stat.S_ISREG(st.st_mode):
        return f"{path} exists and is not a regular file"
    if st is not None and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    if rotated and path.with_name(f"{path.name}.1").is_dir():
        return f"{path}.1 is a directory: rotation could not rename {path} to it"
    return None


def same_file(a: Path, b: Path) -> bool:
    """Whether two (checked) paths name one file, under any spelling."""
    return a.parent.resolve() / a.name == b.parent.resolve() / b.name


def lock_log(
    path: Path, where: str, advice: str = "give each node process its own log file"
) -> int:
    """Take the lock file beside the log (``.NAME.lock``) for as long as this process
    runs (the descriptor is returned, never closed), or ConfigError if another
    process holds it: two processes rotating one file would rename it under each
    other and scatter their lines. The lock is beside the file the path names
    once symlinks are followed, so two spellings of one file take one lock."""
    real = path.resolve()
    lock = real.with_name(f".{real.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise ConfigError(f"{where} {path}: cannot create {lock}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(
            f"{where} {path} is written by another process (it holds {lock}): {advice}"
        ) from None
    return fd


class _SaysOnce(logging.Handler):
    """A log file's failures (a full disk, its directory gone) said once per failing
    spell, as one JSON line on stderr: the stdlib printed a traceback of ~500 bytes
    to stderr for every record it could not write."""

    _failing = False
    _failed = False  # in this emit

    def emit(self, record: logging.LogRecord) -> None:
        self._failed = False
        super().emit(record)
        if self._failing and not self._failed:
            self._failing = False
            self._say("info", f"the log file {self._path()} is written again")

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed = True
        if not self._failing:
            self._failing = True
            exc = sys.exc_info()[1]
            why = (exc.strerror if isinstance(exc, OSError) else None) or repr(exc)
            self._say("error", f"cannot write the log file {self._path()}: {why} (lines lost)")

    def _path(self) -> str:
        return str(getattr(self, "baseFilename", "?"))

    def _say(self, level: str, msg: str) -> None:
        doc = {"ts": round(time.time(), 3), "level": level, "logger": log.name, "msg": msg}
        try:
            sys.stderr.write(json.dumps(doc) + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr is gone too: nowhere left to say it


class _Watched(_SaysOnce, logging.handlers.WatchedFileHandler):
    pass


class _Rotating(_SaysOnce, logging.handlers.RotatingFileHandler):
    pass


def file_handler(path: Path, max_bytes: int, backups: int) -> logging.Handler:
    """A handler writing to ``path``: rotated by size, or (``max_bytes`` 0) reopened
    when something else moves it away (logrotate). A record it cannot write is
    lost; stderr gets one line when that starts and one when it ends."""
    if max_bytes == 0:
        return _Watched(path, encoding="utf-8")
    return _Rotating(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")


class StatusFile:
    """The latest status line of each node of this process, in one file replaced
    whole at each write (no fsync: it is a heartbeat, rewritten every interval)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[str, str] = {}
        self.failing = False

    def write(self, name: str, doc: dict[str, Any]) -> None:
        self.lines[name] = json.dumps(doc)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_text("".join(f"{line}\n" for line in self.lines.values()))
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self.failing:  # once per failing spell, not every interval
                log.warning("cannot write the status file %s: %s", self.path, exc)
            self.failing = True
        else:
            if self.failing:
                log.info("the status file %s is written again", self.path)
            self.failing = False
