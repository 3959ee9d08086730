"""The state file of a testnet run dir: which node lives where, in which process.

``<run>/state.json`` is written atomically (temp file + rename) by every command
that changes the testnet, under an exclusive lock on ``<run>/.lock``, so that
``up``, ``kill``, ``restart``… issued from different shells never interleave.
Readers (``status``) need no lock.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gossipmind.core.errors import ConfigError, NotFound

STATE_VERSION = 1
STATE_FILE = "state.json"
LOCK_FILE = ".lock"
LOG_MAX_BYTES = 4 * 1024 * 1024  # a node process's log file (logs/<proc>.log) is rotated
LOG_BACKUPS = 3  # at this size, with this many old files: at most 16 MiB per process

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# protobuf PublicKey{Type: Ed25519, Data: <32 bytes>} behind an identity multihash
_ED25519_PEER_PREFIX = b"\x00\x24\x08\x01\x12\x20"


def peer_id_of(public_key: bytes) -> str:
    """The libp2p peer id (base58) of a node whose Ed25519 public key this is.

    Same value as ``gossipmind.net.peer_id_from_seed`` (checked by the tests),
    computed without importing libp2p (0.5-0.75 s) so the CLI stays quick.
    """
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    data = _ED25519_PEER_PREFIX + public_key
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + out


@dataclass
class NodeEntry:
    name: str
    dir: str
    key: str  # Ed25519 public key, hex
    peer_id: str
    role: str  # admin | verifier | member
    port: int
    spare: bool = False  # prepared and granted, not started by `up`
    proc: str | None = None  # the process that hosts (or last hosted) it

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.peer_id}"


@dataclass
class ProcEntry:
    id: str
    nodes: list[str]
    pid: int | None = None
    starttime: int | None = None  # /proc/<pid>/stat field 22: tells a reused pid apart
    started_at: float = 0.0
    stdout: str = ""
    stderr: str = ""
    offset: int = 0  # where this incarnation's lines start in stdout
    err_offset: int = 0  # and in stderr
    log: str = ""  # its JSON logs, rotated (empty: a process started before there was one)
    status: str = ""  # its nodes' latest status lines (empty: they are on stdout)
    ended: str | None = None  # stopped | killed | exited


@dataclass
class State:
    run_dir: str
    network: str
    per_process: int
    status_every: float
    nodes: list[NodeEntry] = field(default_factory=list)
    procs: dict[str, ProcEntry] = field(default_factory=dict)
    partition: list[list[str]] | None = None
    log_level: str = "info"
    log_max_bytes: int = LOG_MAX_BYTES  # each process's log: rotated at this size…
    log_backups: int = LOG_BACKUPS  # …keeping this many old files
    version: int = STATE_VERSION

    def node(self, ref: str) -> NodeEntry:
        """A node by name (``node-3``) or index (``3``); NotFound otherwise."""
        ref = ref.strip()
        name = f"node-{ref}" if ref.isdigit() else ref
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes)
        raise NotFound(f"no node {ref!r} in this testnet (nodes: {known})")

    def proc_of(self, node: NodeEntry) -> ProcEntry | None:
        return self.procs.get(node.proc) if node.proc else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> State:
        if doc.get("version") != STATE_VERSION:
            raise ConfigError(f"unsupported testnet state version {doc.get('version')!r}")
        nodes = [NodeEntry(**n) for n in doc["nodes"]]
        procs = {k: ProcEntry(**p) for k, p in doc["procs"].items()}
        rest = {k: v for k, v in doc.items() if k not in ("nodes", "procs")}
        return cls(nodes=nodes, procs=procs, **rest)


def state_path(run_dir: Path) -> Path:
    return run_dir / STATE_FILE


def load_state(run_dir: Path) -> State:
    path = state_path(run_dir)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"no testnet in {run_dir} (start one with `gossipmind testnet up`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable: {exc}") from exc
    try:
        st = State.from_json(doc)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a testnet state file: {exc}") from exc
    if Path(st.run_dir).resolve() != run_dir.resolve():
        # a copied or moved run dir: its state names the original's data dirs, logs
        # and processes, so acting on it would act on the original
        raise ConfigError(
            f"{path} belongs to the testnet in {st.run_dir}, not to {run_dir} "
            f"(a copied or moved run dir cannot be used): use --run-dir {st.run_dir}, "
            "or start a new testnet with `gossipmind testnet up`"
        )
    return st


def save_state(run_dir: Path, state: State) -> None:
    path = state_path(run_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    tmp.replace(path)


def write_json_atomic(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc) + "\n")
    tmp.replace(path)


@contextmanager
def locked(run_dir: Path, *, create: bool = False) -> Iterator[None]:
    """Hold the run dir's lock (blocks while another testnet command holds it).

    Only ``create`` (``up``) makes the run dir; otherwise a run dir without a
    state file is refused before anything is created in it (a mistyped
    ``--run-dir`` leaves no trace).
    """
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    elif not state_path(run_dir).is_file():
        raise ConfigError(f"no testnet in {run_dir} (start one with `gossipmind testnet up`)")
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
