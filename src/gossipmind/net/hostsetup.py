"""How :mod:`gossipmind.net.host` builds its py-libp2p host, and tames its logging.

Moved out of ``host.py`` (which keeps :class:`~gossipmind.net.host.Libp2pTransport`
and :func:`~gossipmind.net.host.open_libp2p_transport`) so that both stay under the
module size limit. Workarounds for py-libp2p 0.8.1 (LIBP2P_NOTES.md), applied by
``open_libp2p_transport``:

* the libp2p **identity** from the node's Ed25519 seed;
* **logs** (§6): :func:`configure_logging` silences the ``libp2p`` logger below
  CRITICAL and redirects a swarm module that logs through the root logger;
* **host construction**: Noise only, TCP only, the connection caps, the Yamux
  window-update default, and the addresses advertised for a wildcard listener
  (:func:`local_ips`, :func:`expand_unspecified`) or an ``announce`` list.

``host.py`` re-exports the public names (``configure_logging``, ``local_ips``,
``expand_unspecified``, ``key_pair_from_seed``, ``peer_id_from_seed``).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import multiaddr
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from gossipmind.core.errors import NetworkError
from gossipmind.net.inbound import INBOUND_UPGRADE_TIMEOUT
from gossipmind.net.interface import TransportConfig

__all__ = [
    "configure_logging",
    "expand_unspecified",
    "key_pair_from_seed",
    "local_ips",
    "peer_id_from_seed",
]

# py-libp2p modules that log through the root logger (see configure_logging).
_ROOT_LOGGING_MODULES = ("libp2p.network.connection.swarm_connection",)
_LOG_FUNCTIONS = frozenset(("debug", "info", "warning", "warn", "error", "exception", "critical"))


# --- identity -------------------------------------------------------------------


def key_pair_from_seed(seed: bytes) -> Any:
    """The libp2p Ed25519 key pair of a 32-byte seed (same key as the node's identity)."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    return create_new_key_pair(seed)


def peer_id_from_seed(seed: bytes) -> str:
    """The base58 libp2p peer id a node with this seed will have."""
    return str(ID.from_pubkey(key_pair_from_seed(seed).public_key).to_base58())


# --- logging --------------------------------------------------------------------


class _ModuleLogging:
    """Stands in for the ``logging`` module inside a py-libp2p module that calls
    ``logging.debug(...)``: records go to a ``libp2p.*`` logger instead of the root
    logger, and ``logging.basicConfig()`` is no longer triggered as a side effect."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def __getattr__(self, attr: str) -> Any:
        if attr in _LOG_FUNCTIONS:
            return getattr(self._logger, attr)
        return getattr(logging, attr)


class _CriticalOnly(logging.Handler):
    """Hands CRITICAL records of the ``libp2p`` tree to the root logger's handlers."""

    def __init__(self) -> None:
        super().__init__(logging.CRITICAL)

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


_CRITICAL_ONLY = _CriticalOnly()


def configure_logging(debug: bool) -> None:
    """Silence py-libp2p below CRITICAL, or let it log at DEBUG when ``debug``.

    Some py-libp2p loggers set their own level (the auto-connector: INFO), so
    those levels are reset to inherit from ``libp2p``. In normal runs the
    ``libp2p`` tree does not propagate, and one handler passes CRITICAL records on
    to the root logger. With ``debug`` everything propagates at DEBUG. Left alone when
    ``LIBP2P_DEBUG`` is set (py-libp2p then installs its own handlers).
    Process-wide: the last transport opened decides.
    """
    import importlib

    for name in _ROOT_LOGGING_MODULES:
        # imported here if need be: py-libp2p imports it at a process's first connection,
        # after this ran, and it would then log through the root logger unredirected
        module = importlib.import_module(name)
        if not isinstance(getattr(module, "logging", None), _ModuleLogging):
            module.logging = _ModuleLogging(name)  # type: ignore[attr-defined]
    if os.environ.get("LIBP2P_DEBUG"):
        return
    for name, child in list(logging.root.manager.loggerDict.items()):
        if name.startswith("libp2p.") and isinstance(child, logging.Logger):
            child.setLevel(logging.NOTSET)
    root = logging.getLogger("libp2p")
    if debug:
        root.removeHandler(_CRITICAL_ONLY)
        root.setLevel(logging.DEBUG)
        root.propagate = True
    else:
        root.addHandler(_CRITICAL_ONLY)
        root.setLevel(logging.CRITICAL)
        root.propagate = False


# --- host construction ----------------------------------------------------------


_UNSPECIFIED = {"ip4": "0.0.0.0", "ip6": "::"}
_NO_IPS: dict[str, list[str]] = {"ip4": [], "ip6": []}


def _primary_ip(family: socket.AddressFamily, probe: str) -> str | None:
    """The address of the interface that routes to ``probe`` (no packet is sent)."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((probe, 9))
            return str(sock.getsockname()[0])
        except OSError:
            return None  # no route: only loopback will be advertised


def local_ips() -> dict[str, list[str]]:
    """Addresses a wildcard listener is reachable at: loopback, then the primary one."""
    out = {"ip4": ["127.0.0.1"], "ip6": ["::1"]}
    for proto, family, probe in (
        ("ip4", socket.AF_INET, "192.0.2.1"),
        ("ip6", socket.AF_INET6, "2001:db8::1"),
    ):
        ip = _primary_ip(family, probe)
        if ip and ip not in out[proto]:
            out[proto].append(ip)
    return out


def expand_unspecified(addr: str, ips: dict[str, list[str]]) -> list[str]:
    """``/ip4/0.0.0.0/tcp/N`` -> one address per local IP; other addresses unchanged."""
    parts = addr.split("/")
    if len(parts) > 2 and parts[1] in _UNSPECIFIED and parts[2] == _UNSPECIFIED[parts[1]]:
        return ["/".join([parts[0], parts[1], ip, *parts[3:]]) for ip in ips[parts[1]]]
    return [addr]


def _addrs_factory(config: TransportConfig) -> Callable[[list[Any]], list[Any]]:
    announce = [_parse_tcp(a, "announce") for a in config.announce]
    wildcard = expand_unspecified(config.listen, _NO_IPS) == []
    ips = local_ips() if wildcard and not announce else None

    def factory(candidates: list[Any]) -> list[Any]:
        if announce:
            return list(announce)
        if ips is None:
            return candidates
        out: list[Any] = []
        for addr in candidates:
            for text in expand_unspecified(str(addr), ips):
                if text not in (str(a) for a in out):
                    out.append(multiaddr.Multiaddr(text))
        return out

    return factory


def _new_host(config: TransportConfig, listen: Any) -> Any:
    # read by py-libp2p's Yamux at every read: one window update per half window
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
    key_pair = key_pair_from_seed(config.seed)
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    limit = config.connection_limit
    connection_config = ConnectionConfig(
        max_connections_per_peer=1,
        max_connections=limit,
        min_connections=0,
        low_watermark=0,
        high_watermark=limit,
        dial_timeout=config.dial_timeout,
        inbound_upgrade_timeout=INBOUND_UPGRADE_TIMEOUT,
    )
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        listen_addrs=[listen],
        connection_config=connection_config,
        enable_tcp=True,
        addrs_factory=_addrs_factory(config),
    )


def _parse_tcp(addr: str, what: str) -> Any:
    try:
        maddr = multiaddr.Multiaddr(addr)
    except ValueError as exc:
        raise NetworkError(f"bad {what} address {addr!r}: {exc}") from exc
    names = [p.name for p in maddr.protocols()]
    if names[:2] not in (["ip4", "tcp"], ["ip6", "tcp"]) or len(names) != 2:
        raise NetworkError(f"{what} address must be /ip4|ip6/<host>/tcp/<port>: {addr!r}")
    return maddr
