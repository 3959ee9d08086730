"""The data directory of a node: identity, store, genesis, API token, config."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gossipmind.core import ops as opsmod
from gossipmind.core.errors import ConfigError, InvalidOp
from gossipmind.core.ops import Op
from gossipmind.core.replica import check_genesis

DEFAULT_HOME = "~/.gossipmind"


@dataclass(frozen=True)
class DataDir:
    root: Path

    @classmethod
    def resolve(cls, path: str | Path | None) -> DataDir:
        raw = path or os.environ.get("GOSSIPMIND_HOME") or DEFAULT_HOME
        return cls(Path(raw).expanduser().resolve())

    @property
    def key(self) -> Path:
        return self.root / "identity.key"

    @property
    def store(self) -> Path:
        return self.root / "kb.sqlite3"

    @property
    def genesis(self) -> Path:
        return self.root / "genesis.json"

    @property
    def token(self) -> Path:
        return self.root / "api.token"

    @property
    def config(self) -> Path:
        return self.root / "node.toml"

    def ensure(self) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create data dir {self.root}: {exc.strerror}") from exc


MAX_GENESIS_FILE = 1024 * 1024  # a genesis op is at most 64 KiB: 128 KiB of hex


def _genesis_json(path: Path) -> Any:
    """The JSON in a genesis file; ValueError for one too large or too deep to
    read (a damaged or hostile file must not crash what reads it)."""
    with path.open("rb") as f:
        data = f.read(MAX_GENESIS_FILE + 1)
    if len(data) > MAX_GENESIS_FILE:
        raise ValueError(f"larger than {MAX_GENESIS_FILE} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def named_network(path: Path) -> str | None:
    """The network id (hex) a genesis file names in its ``network`` field, read
    even from a file too damaged to load; None if it names none."""
    try:
        doc = _genesis_json(path)
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError included
        return None
    network = doc.get("network") if isinstance(doc, dict) else None
    return network if isinstance(network, str) else None


def write_atomic(path: Path, text: str, mode: int = 0o666) -> None:
    """Replace ``path`` with ``text`` atomically: a temp file in the same dir,
    fsynced, renamed over ``path``, then the dir fsynced. A crash leaves the old
    file or the new one, never a part of one. ``mode`` is filtered by the umask."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # a platform that cannot open a directory
        fsync_path(path.parent)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by its path (a directory: its entries, so a
    rename or link into it survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dump_genesis(op: Op) -> str:
    """The shareable genesis file: JSON with the op as hex and its id."""
    doc = {
        "gossipmind_genesis": 1,
        "network": op.id.hex(),
        "name": op.body["name"],
        "op": op.raw.hex(),
    }
    return json.dumps(doc, indent=2) + "\n"


def load_genesis(path: Path) -> Op:
    """Read and fully check a genesis file; raise ConfigError with the reason."""
    try:
        doc = _genesis_json(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"no genesis file at {path}") from exc
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise ConfigError(f"{path} is not a genesis file: {exc}") from exc
    if not isinstance(doc, dict) or "gossipmind_genesis" not in doc:
        raise ConfigError(f"{path} is not a gossipmind genesis file")
    version = doc["gossipmind_genesis"]
    if version != 1:
        raise ConfigError(
            f"{path}: unsupported genesis file version {json.dumps(version)} "
            "(this gossipmind reads version 1)"
        )
    if not isinstance(doc.get("op"), str):
        raise ConfigError(f'{path}: malformed genesis: no "op" (the genesis op in hex)')
    try:
        op = opsmod.decode(bytes.fromhex(doc["op"]))
        check_genesis(op)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: malformed genesis: {exc}") from exc
    except InvalidOp as exc:
        raise ConfigError(f"{path}: invalid genesis op: {exc}") from exc
    if doc.get("network") != op.id.hex():
        raise ConfigError(f"{path}: the network id does not match the genesis op")
    return op
