"""`gossipmind node`: run one or more nodes in the foreground until SIGINT, SIGTERM
or SIGHUP (a closed terminal or ssh session).

On start each node prints one JSON line to stdout::

    {"event": "ready", "name": ..., "peer_id": ..., "addrs": [...], "network": ...}

Logs are JSON lines on stderr, or in a rotated file (see ``node.logfile``); the
status lines of ``--status-every`` go to stdout, or to a status file. A node's data
dir may hold ``control.json``
(``{"block": [peer ids], "drop": p, "delay_s": s}``): the node refuses the
listed peers, and drops incoming gossip with probability ``p`` / delays it up
to ``s`` seconds — how the testnet makes application-level partitions and
lossy, slow links.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from gossipmind.core.errors import GossipmindError
from gossipmind.node import build
from gossipmind.node.config import NodeConfig
from gossipmind.node.heap import settle_heap
from gossipmind.node.logfile import StatusFile
from gossipmind.node.node import Node, open_node

if TYPE_CHECKING:
    from trio_typing import TaskStatus  # the trio stubs libp2p installs shadow trio's own

log = logging.getLogger("gossipmind.node")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


_ON_ROOT: list[logging.Handler] = []  # the handler this module put on the root logger


def configure_logging(level: str = "info", handler: logging.Handler | None = None) -> None:
    """JSON logs of the ``gossipmind`` loggers at ``level``: to ``handler`` (a log
    file's), or to stderr. A handler replaced here is closed.

    The handler goes on the root logger too (beside any others there), so that
    what other libraries log takes the same way, as JSON: py-libp2p's records
    (every level with ``debug_libp2p``, CRITICAL otherwise; see ``net.host``) and
    other libraries' warnings. Without it they went to Python's last-resort
    handler: plain text on stderr, WARNING and above only, past the log file."""
    handler = handler or logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger("gossipmind")
    old, root.handlers[:] = root.handlers[:], [handler]
    top = logging.getLogger()
    for h in _ON_ROOT:
        top.removeHandler(h)
    _ON_ROOT[:] = [handler]
    top.addHandler(handler)
    for h in old:
        if h is not handler:
            h.close()
    root.setLevel(level.upper())
    root.propagate = False


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout. If stdout is gone (the terminal closed: EIO; the
    reader of a pipe exited: EPIPE) nobody can read it: the node carries on, and
    stdout is pointed at /dev/null so that no later write or the final flush fails."""
    try:
        sys.stdout.write(json.dumps({"event": event, "ts": round(time.time(), 3), **fields}) + "\n")
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


MAX_CONTROL_FILE = 1024 * 1024
"""Bytes of ``control.json`` read at most: a block list of every peer a node could
know fits many times over; a larger file is refused, not read."""


def _number(doc: dict[str, Any], key: str) -> float:
    value = doc.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key} must be a number, not {json.dumps(value)[:40]}")
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise ValueError(f"{key} is out of range") from None


def _link_faults(doc: dict[str, Any]) -> tuple[float, float] | None:
    drop, delay = _number(doc, "drop"), _number(doc, "delay_s")
    if not (0 <= drop < 1 and 0 <= delay <= 10):
        raise ValueError("drop must be in [0, 1) and delay_s in [0, 10]")
    return (drop, delay) if drop or delay else None


def read_control(path: Path) -> tuple[set[str], tuple[float, float] | None]:
    """The peers to block and the link faults a ``control.json`` asks for. OSError if
    it cannot be read; ValueError if it is not a regular file, too large, not UTF-8
    JSON, nested too deeply or holds a value out of range; TypeError if it is not an
    object or holds a value of the wrong type."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the node
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = f.read(MAX_CONTROL_FILE + 1)
    if len(data) > MAX_CONTROL_FILE:
        raise ValueError(f"larger than {MAX_CONTROL_FILE} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(doc, dict):
        raise TypeError("it must hold a JSON object")
    block = doc.get("block", [])
    if not isinstance(block, list) or not all(isinstance(p, str) for p in block):
        raise TypeError("block must be a list of peer ids (strings)")
    return set(block), _link_faults(doc)


async def _watch_control(node: Node, path: Path) -> None:
    mtime = None
    while True:
        try:
            st = path.stat().st_mtime_ns
        except FileNotFoundError:
            st = None
        if st != mtime:
            mtime = st
            block: set[str] = set()
            faults: tuple[float, float] | None = None
            if st is not None:
                try:
                    block, faults = read_control(path)
                except (OSError, ValueError, TypeError) as exc:  # JSONDecodeError too
                    log.warning(
                        "ignoring unreadable %s (keeping the previous settings): %s", path, exc
                    )
                    block, faults = node.blocked, node.link_faults
            if faults != node.link_faults:
                node.link_faults = faults
                log.info("link faults: %s", faults or "none")
            if block != node.blocked:
                await node.block(block)
                log.info("partition: blocking %d peers", len(block))
        await trio.sleep(0.2)


async def _report(node: Node, name: str, every: float, to: StatusFile | None) -> None:
    while True:
        await trio.sleep(every)
        st = node.status()
        fields: dict[str, Any] = dict(
            name=name,
            ops=st["ops"],
            root=st["root"],
            peers=len(st["peers"]),
            pending=st["pending"],
            rejected=st["rejected"],
            gossip_accepted=st["gossip_accepted"],
            gossip_rejected=st["gossip_rejected"],
            gossip_messages=st["counters"]["gossip_messages"],
            commit=build.COMMIT,
        )
        if to is None:
            emit("status", **fields)
        else:
            to.write(name, {"event": "status", "ts": round(time.time(), 3), **fields})


# A service runs beside a node (e.g. the HTTP API); ``task_status.started(info)``
# hands back what the ready line should tell (e.g. the API URL).
Service = Callable[..., Awaitable[Any]]
EXIT_SECOND_SIGNAL = 130  # a second signal while stopping
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Each stops the nodes cleanly. SIGHUP is what a node run in a terminal, an ssh
session or a tmux pane gets when that closes: Python's default would end the process
at once and lose what the node acknowledged but had not written yet."""


# What a previous run's services wrote and remove when they stop: after a crash
# (or SIGKILL) they stay, naming a process that is gone. Holding the store, this
# node owns the data dir: clear them before the services start (the API writes
# api.json again, if it is served at all — `--no-api` must not leave the old one).
STALE_FILES = ("api.json",)


def _clear_stale(data_dir: Path) -> None:
    for name in STALE_FILES:
        try:
            (data_dir / name).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove stale %s: %s", data_dir / name, exc)


async def _run_one(
    config: NodeConfig,
    name: str,
    status_every: float,
    services: dict[str, Service],
    *,
    status_file: StatusFile | None = None,
    task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with open_node(config) as node, trio.open_nursery() as nursery:
        _clear_stale(config.data_dir)
        nursery.start_soon(_watch_control, node, config.data_dir / "control.json")
        if status_every > 0:
            nursery.start_soon(_report, node, name, status_every, status_file)
        started = {key: await nursery.start(svc, node) for key, svc in services.items()}
        st = node.status()
        emit(
            "ready",
            name=name,
            peer_id=st["peer_id"],
            addrs=st["addrs"],
            network=st["network"],
            key=st["key"],
            build=build.describe(),
            ops=st["ops"],
            root=st["root"],
            **started,
        )
        task_status.started()
        await trio.sleep_forever()


async def serve(
    configs: list[tuple[str, NodeConfig]],
    *,
    status_every: float = 0.0,
    services: dict[str, Service] | None = None,
    status_file: Path | None = None,
) -> None:
    """Run every node in one process until SIGINT, SIGTERM or SIGHUP; then stop cleanly.

    A second signal while stopping exits at once (status 130 + nothing else):
    what the nodes acknowledged is already durable, and the next start
    recovers like after a crash. ``status_file``: the status lines go there, not
    to stdout.
    """
    to = StatusFile(status_file) if status_file is not None else None
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with trio.open_nursery() as outer:
            nodes = trio.CancelScope()

            async def on_signals() -> None:
                async for sig in signals:
                    name = signal.Signals(sig).name
                    if not nodes.cancel_called:
                        log.info("received %s: stopping", name)
                        nodes.cancel()
                    else:
                        log.warning("received %s again while stopping: exiting now", name)
                        emit("killed", names=[n for n, _ in configs], signal=name)
                        os._exit(EXIT_SECOND_SIGNAL)

            outer.start_soon(on_signals)
            with nodes:
                async with trio.open_nursery() as nursery:
                    run_one = functools.partial(_run_one, status_file=to)
                    for name, cfg in configs:
                        await nursery.start(run_one, cfg, name, status_every, services or {})
                    settle_heap()  # long-lived from here on: keep full GC pauses short
            outer.cancel_scope.cancel()
    emit("stopped", names=[n for n, _ in configs])


def run(
    configs: list[tuple[str, NodeConfig]],
    *,
    status_every: float = 0.0,
    services: dict[str, Service] | None = None,
    status_file: Path | None = None,
) -> None:
    try:
        trio.run(
            functools.partial(
                serve,
                configs,
                status_every=status_every,
                services=services,
                status_file=status_file,
            )
        )
    except* KeyboardInterrupt:
        emit("stopped", names=[n for n, _ in configs])
    except* GossipmindError as group:
        leaf: BaseException = group  # nested once per task group it crossed
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from None
