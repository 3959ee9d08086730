"""``gossipmind node --metrics-file``: the metrics for node_exporter's textfile collector.

The file is the text of ``GET /v1/metrics`` with a ``peer_id`` label on every
sample (node_exporter merges every ``*.prom`` file of its directory: two nodes'
samples alike in name and labels would collide, and one node's would be lost).
It is replaced atomically (a temp file renamed over it; no fsync: a crash leaves
a stale file by design, and the next start rewrites it), mode 0644 whatever the
umask (node_exporter runs as its own user; the file holds counts and public ids),
in a worker thread, so a slow disk never holds up the node. The first write
happens before the node says it is ready, and a file that cannot be written then
is refused (ConfigError). A lock file beside it (``.NAME.lock``, held while the
node runs) keeps a second process from writing the same file; a clean stop
removes the file, if it is still the one this node wrote.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from gossipmind.api.metrics import full_status, render
from gossipmind.core.errors import ConfigError
from gossipmind.node.logfile import lock_log
from gossipmind.node.node import Node

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger("gossipmind.metrics")

MODE = 0o644


def check_path(path: Path, data_dirs: list[Path]) -> Path:
    """The absolute path (symlinks in its directory resolved, the file's own not),
    or ConfigError: no such directory, or something other than a regular file
    there (a symlink or a FIFO would make the node overwrite, then delete, what it
    points to), or a file inside a data dir."""
    path = path.expanduser()
    if not path.parent.is_dir():
        raise ConfigError(f"--metrics-file {path}: no directory {path.parent}")
    path = path.parent.resolve() / path.name
    try:
        st = path.lstat()
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"--metrics-file {path} is a directory: name a file (x.prom)")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"--metrics-file {path} exists and is not a regular file")
    for d in data_dirs:
        if path.is_relative_to(d.resolve()):
            raise ConfigError(f"--metrics-file {path} is inside the data dir {d}")
    return path


def _lock(path: Path) -> int:
    return lock_log(path, "--metrics-file", "give each node its own file")


Written = tuple[int, int, int, int]  # device, inode, size, mtime: the file we wrote


def _identity(st: os.stat_result) -> Written:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns  # (an inode number is reused)


def _write(path: Path, text: str) -> Written:
    """Replace ``path`` with ``text`` (the temp name is fixed: the lock makes it ours,
    and a SIGKILL's leftover is reused); what was written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, MODE)
    try:
        os.fchmod(fd, MODE)  # not the umask's (a service's UMask=0077)
        with os.fdopen(fd, "w", closefd=False) as f:
            f.write(text)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return _identity(st)


def _remove(path: Path, written: Written | None) -> None:
    """Remove ``path`` if it is still the file this process wrote last."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if written is not None and _identity(st) == written:
        path.unlink()


async def write_metrics(
    node: Node,
    path: Path,
    every: float,
    *,
    task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Write the metrics to ``path`` now and every ``every`` seconds until cancelled;
    then remove it, so a stopped node does not look alive. The first write failing
    is a ConfigError; a later one is logged (once per distinct error) and tried
    again at the next round: the node runs on."""
    labels = {"peer_id": node.transport.peer_id}
    lock = _lock(path)
    written: Written | None = None
    last_error = ""

    async def write(first: bool = False) -> None:
        nonlocal written, last_error
        text = render(full_status(node, root=False), labels)  # (on the loop: the node's)
        try:
            # (not abandoned when cancelled: a write finishing after the stop removed
            # the file would leave it behind)
            written = await trio.to_thread.run_sync(_write, path, text)
        except OSError as exc:
            if first:
                raise ConfigError(f"--metrics-file {path} cannot be written: {exc}") from exc
            if str(exc) != last_error:
                log.warning("cannot write the metrics file %s: %s", path, exc)
            last_error = str(exc)
        else:
            if last_error:
                log.info("metrics file %s written again", path)
            last_error = ""

    try:
        await write(first=True)
        task_status.started(str(path))
        while True:
            await trio.sleep(every)
            await write()
    finally:
        with contextlib.suppress(OSError):
            _remove(path, written)
        with contextlib.suppress(OSError):
            path.with_name(f".{path.name}.tmp").unlink(missing_ok=True)
        os.close(lock)


def service(path: Path, every: float) -> Any:
    """:func:`write_metrics` as a node service (``gossipmind node``)."""

    async def run(node: Node, *, task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        await write_metrics(node, path, every, task_status=task_status)

    return run
