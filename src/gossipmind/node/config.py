"""Node configuration: flags, a TOML file in the data dir, or both (flags win)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gossipmind.core.errors import ConfigError
from gossipmind.node.logfile import (
    DEFAULT_BACKUPS,
    DEFAULT_MAX_BYTES,
    backups_problem,
    size_problem,
)
from gossipmind.node.resolve import bootstrap_problem

DEFAULT_LISTEN = "/ip4/127.0.0.1/tcp/0"


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path
    listen: str = DEFAULT_LISTEN
    bootstrap: tuple[str, ...] = ()
    announce: tuple[str, ...] = ()  # extra multiaddrs to advertise (a public address behind NAT)
    genesis_file: Path | None = None  # join this network if the data dir has none yet
    gossip_interval: float = 0.05  # least seconds between two batches of this node's ops
    gossip_budget: float = 8.0  # gossip messages/s the network affords (node.pacer)
    sync_interval: float = 3.0  # seconds between anti-entropy rounds with a random peer
    sync_timeout: float = 30.0  # a sync session that makes no progress for this long is dropped
    max_peers: int = 12  # gossipsub degree_high: peers outside the mesh starve
    min_peers: int = 4  # below this, dial addresses learned by peer exchange
    explore_interval: float = 30.0  # below max_peers, dial one random known peer this often
    verifier: bool = False
    learn: bool = True  # run sleep-time synthesis
    idle_s: float = 5.0  # the agent must be idle this long before learning runs
    cpu_budget: float = 0.25  # share of one core learning may use
    learn_max_wait_s: float = 60.0  # an agent never idle that long: learn anyway (budgeted)
    propose_wait_s: float = 2.0  # per earlier-ranked node, before proposing (0: at once)
    revoke_window_s: float = 600.0  # a tier-2 verifier judges a suspect fix on this window
    revoke_confirm_s: float = 600.0  # ... bad for this long before it revokes (node/verifier.py)
    report_window_ms: int = 2000  # failures are batched per pattern over this window
    report_hold_max_ms: int = 600_000  # a steady stream of a pattern: one op per this, at most
    api_port: int | None = None  # None or 0: any free port (--no-api turns the API off)
    passphrase: str | None = field(default=None, repr=False)
    debug_libp2p: bool = False
    synchronous: str = "FULL"  # SQLite durability (FULL survives power loss)
    log_file: Path | None = None  # None: the logs go to stderr (node.logfile)
    log_max_bytes: int = DEFAULT_MAX_BYTES  # rotate log_file at this size (0: never)
    log_backups: int = DEFAULT_BACKUPS  # rotated files kept besides log_file
    extra: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, **kw: Any) -> NodeConfig:
        return check(replace(self, **{k: v for k, v in kw.items() if v is not None}))


_RANGES: dict[str, tuple[float, float]] = {
    "gossip_interval": (0.001, 60),
    "gossip_budget": (0.1, 10_000),
    "sync_interval": (0.1, 3600),
    "sync_timeout": (1, 3600),
    "max_peers": (1, 1000),
    "min_peers": (0, 1000),
    "explore_interval": (1, 86_400),
    "idle_s": (0, 86_400),
    "cpu_budget": (0.01, 1),
    "learn_max_wait_s": (1, 86_400),
    "propose_wait_s": (0, 600),
    "revoke_window_s": (0, 86_400),
    "revoke_confirm_s": (0, 86_400),
    "report_window_ms": (1, 3_600_000),
    "report_hold_max_ms": (0, 3_600_000),
    "api_port": (0, 65_535),
}


def check(cfg: NodeConfig, where: str = "node setting") -> NodeConfig:
    """Raise ConfigError for a value out of its range (a clear error, not a crash at start)."""
    for name, (lo, hi) in _RANGES.items():
        value = getattr(cfg, name)
        if value is not None and not lo <= value <= hi:
            raise ConfigError(f"{where}: {name} = {value} is out of range [{lo:g}, {hi:g}]")
    if cfg.min_peers > cfg.max_peers:
        raise ConfigError(
            f"{where}: min_peers ({cfg.min_peers}) exceeds max_peers ({cfg.max_peers})"
        )
    if (why := size_problem(cfg.log_max_bytes)) is not None:
        raise ConfigError(f"{where}: log_max_bytes = {why}")
    if (why := backups_problem(cfg.log_backups)) is not None:
        raise ConfigError(f"{where}: log_backups = {why}")
    for addr in cfg.announce:
        if (why := tcp_address_problem(addr)) is not None:
            raise ConfigError(f"{where}: announce: {why}")
    for addr in cfg.bootstrap:
        if addr.startswith("/memory/"):  # the in-memory fake network's (simulations)
            continue
        if (why := bootstrap_problem(addr)) is not None:
            raise ConfigError(f"{where}: bootstrap: {why}")
    return cfg


def tcp_address_problem(addr: str) -> str | None:
    """Why ``addr`` is not a /ip4|ip6/<host>/tcp/<port> address; None if it is one
    (the check ``listen`` gets at start, so a bad ``announce`` is a ConfigError too,
    not a failure of the transport once the node is starting)."""
    from multiaddr import Multiaddr
    from multiaddr.exceptions import Error as MultiaddrError

    try:
        maddr = Multiaddr(addr)
    except (ValueError, MultiaddrError) as exc:
        return str(exc)  # names the address
    if [p.name for p in maddr.protocols()] not in (["ip4", "tcp"], ["ip6", "tcp"]):
        return f"{addr!r} must have the form /ip4|ip6/<host>/tcp/<port>"
    return None


_TYPES: dict[str, type | tuple[type, ...]] = {
    "listen": str,
    "bootstrap": list,
    "announce": list,
    "genesis_file": str,
    "gossip_interval": (int, float),
    "gossip_budget": (int, float),
    "sync_interval": (int, float),
    "sync_timeout": (int, float),
    "max_peers": int,
    "min_peers": int,
    "explore_interval": (int, float),
    "verifier": bool,
    "learn": bool,
    "idle_s": (int, float),
    "cpu_budget": (int, float),
    "learn_max_wait_s": (int, float),
    "propose_wait_s": (int, float),
    "revoke_window_s": (int, float),
    "revoke_confirm_s": (int, float),
    "report_window_ms": int,
    "report_hold_max_ms": int,
    "api_port": int,
    "debug_libp2p": bool,
    "synchronous": str,
    "log_file": str,
    "log_max_bytes": int,
    "log_backups": int,
}


def load_config(data_dir: Path, path: Path | None = None) -> NodeConfig:
    """Read ``node.toml`` from the data dir (or ``path``); missing file: defaults."""
    cfg = NodeConfig(data_dir=data_dir)
    file = path or data_dir / "node.toml"
    if not file.exists():
        if path is not None:
            raise ConfigError(f"no config file at {path}")
        return cfg
    if file.is_dir():
        raise ConfigError(f"{file} is a directory, not a config file")
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{file}: {exc}") from exc
    known = {f.name for f in fields(NodeConfig)}
    values: dict[str, Any] = {}
    settings = doc
    if "node" in doc:  # the settings may sit in a [node] table; then nothing else may
        settings = doc["node"]
        if not isinstance(settings, dict):
            raise ConfigError(f"{file}: node must be a table ([node]), not a value")
        others = sorted(set(doc) - {"node"})
        if others:
            raise ConfigError(
                f"{file}: settings outside the [node] table: {', '.join(others)} "
                "(put every setting in [node], or use no table)"
            )
    for key, value in settings.items():
        if key not in known or key not in _TYPES:
            raise ConfigError(f"{file}: unknown setting {key!r}")
        expected = _TYPES[key]
        if isinstance(value, bool) and expected is not bool:
            raise ConfigError(f"{file}: {key} has the wrong type")
        if not isinstance(value, expected):
            raise ConfigError(f"{file}: {key} has the wrong type ({type(value).__name__})")
        values[key] = value
    for key in ("bootstrap", "announce"):
        if key in values:
            values[key] = tuple(str(b) for b in values[key])
    if "genesis_file" in values:
        values["genesis_file"] = (data_dir / values["genesis_file"]).resolve()
    if "log_file" in values:  # relative to the data dir, like genesis_file
        values["log_file"] = data_dir / Path(values["log_file"]).expanduser()
    if values.get("synchronous", "FULL") not in ("FULL", "NORMAL"):
        raise ConfigError(f"{file}: synchronous must be FULL or NORMAL")
    return check(replace(cfg, **values), str(file))
