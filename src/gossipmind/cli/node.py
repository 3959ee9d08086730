"""`gossipmind node`: the daemon beside an agent."""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gossipmind.cli.common import (
    Ctx,
    FloatRange,
    check_log_backups,
    check_log_max_bytes,
    errors,
    pass_ctx,
    passphrase_option,
)
from gossipmind.core.errors import ConfigError
from gossipmind.node.config import load_config, tcp_address_problem
from gossipmind.node.logfile import (
    DEFAULT_BACKUPS,
    DEFAULT_MAX_BYTES,
    path_problem,
    same_file,
)
from gossipmind.node.resolve import bootstrap_problem

if TYPE_CHECKING:
    from trio_typing import TaskStatus  # the trio stubs libp2p installs shadow trio's own

    from gossipmind.node.daemon import Service
    from gossipmind.node.node import Node


def _check_bootstrap(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    for addr in values:
        if (why := bootstrap_problem(addr)) is not None:
            raise click.BadParameter(why)
    return values


def _check_listen(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (why := tcp_address_problem(value)) is not None:
        raise click.BadParameter(why)
    return value


def _check_file(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and (why := path_problem(value)) is not None:
        raise click.BadParameter(why)
    return value


def check_port_free(port: int, where: str) -> None:
    """Fail now, naming the port, if the API could not listen on 127.0.0.1:``port``."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(
                f"cannot serve the API on 127.0.0.1:{port} ({where}): {exc.strerror}; "
                "choose another port or 0 for any free one"
            ) from None


def listen_endpoint(addr: str) -> tuple[socket.AddressFamily, str, int]:
    """(family, host, port) of a checked /ip4|ip6/<host>/tcp/<port> listen address."""
    from multiaddr import Multiaddr

    maddr = Multiaddr(addr)
    names = [p.name for p in maddr.protocols()]
    family = socket.AF_INET6 if names[0] == "ip6" else socket.AF_INET
    return family, maddr.value_for_protocol(names[0]), int(maddr.value_for_protocol("tcp"))


def listen_key(host: str, port: int) -> tuple[int, str]:
    """(port, host) with the host normalized: an IPv4-mapped IPv6 address as IPv4,
    any wildcard (0.0.0.0, ::) as ``"*"``."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return port, host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return port, "*" if ip.is_unspecified else str(ip)


def listens_overlap(a: tuple[int, str], b: tuple[int, str]) -> bool:
    """Whether two :func:`listen_key` endpoints would share a port (SO_REUSEPORT lets
    both bind): the same fixed port, on the same host or with a wildcard on either
    side. Port 0 (any free port) never does."""
    if a[0] == 0 or a[0] != b[0]:
        return False
    return a[1] == b[1] or "*" in (a[1], b[1])


def check_listen_free(addr: str, where: str) -> None:
    """Fail now, naming the address, if libp2p could not have ``addr`` to itself.

    py-libp2p listens with SO_REUSEPORT, so a second node on the same port would
    start without an error and share the first one's inbound connections. A
    probe without SO_REUSEPORT fails while anything listens there. Port 0 is
    probed too: binding it fails if the host is not an address of this machine.
    """
    family, host, port = listen_endpoint(addr)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:  # no IPv6 here: refused too
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            probe.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {addr} ({where}): {_bind_problem(exc)}") from None


def _bind_problem(exc: OSError) -> str:
    """Why a bind failed, with the advice that fits the reason."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{exc.strerror}; another process (another node?) may listen there: "
            "choose another port, or 0 for any free one"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{exc.strerror}: not an address of this machine"
    return exc.strerror or str(exc)


def check_api_apart(api_port: int, listens: list[str], where: str) -> None:
    """Fail now if the API (127.0.0.1:``api_port``) would take a TCP port a node's
    libp2p listen address takes: on 127.0.0.1 or a wildcard, libp2p binds it first
    and the API could not start."""
    if api_port == 0:
        return
    for addr in listens:
        _, host, port = listen_endpoint(addr)
        if listens_overlap(listen_key("127.0.0.1", api_port), listen_key(host, port)):
            raise ConfigError(
                f"the API port {api_port} ({where}) is the TCP port of the listen address "
                f"{addr}: give the API another port, or 0 for any free one"
            )


def api_service(port: int, where: str) -> Service:
    """The local API on 127.0.0.1:``port`` as a node service. A port taken between the
    checks and the bind (or any bind error) is a ConfigError naming the port (exit 4)."""
    import trio

    from gossipmind.api.server import serve_api

    async def serve(node: Node, *, task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            try:
                url = await nursery.start(functools.partial(serve_api, node, port=port))
            except* OSError as group:
                leaf: BaseException = group
                while isinstance(leaf, BaseExceptionGroup):
                    leaf = leaf.exceptions[0]
                assert isinstance(leaf, OSError)
                raise ConfigError(
                    f"cannot serve the API on 127.0.0.1:{port} ({where}): {_bind_problem(leaf)}"
                ) from None
            task_status.started(url)

    return serve


@click.command("node")
@click.option(
    "--listen",
    callback=_check_listen,
    help="libp2p listen multiaddr (default /ip4/127.0.0.1/tcp/0).",
)
@click.option(
    "--bootstrap",
    "bootstrap",
    multiple=True,
    callback=_check_bootstrap,
    help="A peer to join through: /ip4/…/tcp/…/p2p/…, /dns4/<name>/tcp/…/p2p/…, or "
    "/dnsaddr/<name>/p2p/… (a list in DNS TXT records; resolved at every dial; repeatable).",
)
@click.option(
    "--genesis",
    "genesis",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Join the network of this genesis file (first run of a new data dir).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML config (default: node.toml in the data dir). Flags override it.",
)
@click.option("--verifier", is_flag=True, default=None, help="Run the verifier loop too.")
@click.option(
    "--sync-interval", type=FloatRange(0.1, 3600), help="Seconds between anti-entropy rounds."
)
@click.option(
    "--status-every",
    type=FloatRange(0),
    default=0.0,
    help="Print a status JSON line every N seconds (0: never).",
)
@click.option(
    "--status-file",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_check_file,
    help="Write the status lines of --status-every to this file instead of stdout: it is "
    "replaced each time and holds the latest line of each node (its size does not grow).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Level of the JSON logs (on stderr, or in --log-file).",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_check_file,
    help="Write the JSON logs to this file instead of stderr, rotated by size (default: "
    "log_file in node.toml, relative to the data dir; else stderr).",
)
@click.option(
    "--log-max-bytes",
    type=int,
    callback=check_log_max_bytes,
    help=f"Rotate --log-file when it would reach this size (default {DEFAULT_MAX_BYTES}; "
    "at least 1024): at most --log-backups + 1 files of this size. 0: never rotate, reopen "
    "the file when it is moved (for logrotate).",
)
@click.option(
    "--log-backups",
    type=int,
    callback=check_log_backups,
    help=f"Rotated log files kept besides --log-file: PATH.1 (newest) … PATH.N (default "
    f"{DEFAULT_BACKUPS}; 1 to 1000).",
)
@click.option("--debug-libp2p", is_flag=True, default=None, help="Let libp2p log (noisy).")
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Local HTTP API port on 127.0.0.1 (default: api_port in node.toml, else 0 = any "
    "free port; the port in use is in api.json in the data dir).",
)
@passphrase_option
@click.option("--no-api", is_flag=True, help="Do not serve the local HTTP API.")
@click.option(
    "--extra-data-dir",
    "extra",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Host another node (its own data dir) in this process (repeatable).",
)
@click.option(
    "--metrics-file",
    type=click.Path(path_type=Path),
    help="Also write the metrics (Prometheus text format, as GET /v1/metrics) to this "
    "file, for node_exporter's textfile collector (name it *.prom); removed at stop.",
)
@click.option(
    "--metrics-every",
    type=FloatRange(1, 3600),
    default=15.0,
    show_default=True,
    help="Seconds between two writes of --metrics-file.",
)
@pass_ctx
@errors
def node(
    ctx: Ctx,
    listen: str | None,
    bootstrap: tuple[str, ...],
    genesis: Path | None,
    config_file: Path | None,
    verifier: bool | None,
    sync_interval: float | None,
    status_every: float,
    status_file: Path | None,
    log_level: str,
    log_file: Path | None,
    log_max_bytes: int | None,
    log_backups: int | None,
    debug_libp2p: bool | None,
    api_port: int | None,
    no_api: bool,
    extra: tuple[Path, ...],
    metrics_file: Path | None,
    metrics_every: float,
) -> None:
    """Run the node in the foreground until Ctrl-C, SIGTERM or SIGHUP (a clean stop).

    Prints one JSON line per node when it is ready (its multiaddrs), then JSON
    logs on stderr (or in --log-file, rotated). Joining a network = --genesis FILE +
    one --bootstrap address.
    """
    from gossipmind.node.daemon import configure_logging, run
    from gossipmind.node.logfile import file_handler, lock_log

    if status_file is not None and status_every <= 0:
        raise click.UsageError("--status-file needs --status-every N (N > 0)")
    if status_file is not None and log_file is not None and same_file(status_file, log_file):
        raise click.UsageError("--status-file and --log-file name the same file")

    if extra and api_port is not None:
        raise click.UsageError(
            "--api-port names one port; with --extra-data-dir every node's API takes a free "
            "port (see each node's api.json)"
        )
    if extra and listen is not None and listen_endpoint(listen)[2] != 0:
        raise click.UsageError(
            "--listen with a fixed port would put every node of --extra-data-dir on it: "
            "use port 0, or set listen in each data dir's node.toml"
        )
    if extra and metrics_file is not None:
        raise click.UsageError(
            "--metrics-file names one file; with --extra-data-dir run one process per node "
            "to write one file each, or read GET /v1/metrics of each node's API"
        )
    data_dirs = [ctx.dir.root, *(p.resolve() for p in extra)]
    if twice := next((d for i, d in enumerate(data_dirs) if d in data_dirs[:i]), None):
        raise click.UsageError(
            f"--extra-data-dir: {twice} is named twice (the main data dir counts): "
            "each node of a process needs its own data dir"
        )
    configure_logging(log_level)
    passphrase = ctx.passphrase()
    configs = []
    for data_dir in data_dirs:
        cfg = load_config(data_dir, config_file if data_dir == ctx.dir.root else None)
        cfg = cfg.with_overrides(
            listen=listen,
            genesis_file=genesis,
            verifier=verifier,
            sync_interval=sync_interval,
            debug_libp2p=debug_libp2p,
            bootstrap=tuple(bootstrap) or None,
            passphrase=passphrase,
            **_log_overrides(
                cfg.log_file, data_dir, ctx.dir.root, log_file, log_max_bytes, log_backups
            ),
        )
        configs.append((data_dir.name, cfg))  # (its bootstrap list was checked by load_config)
    taken: list[tuple[tuple[int, str], Path, str]] = []
    for _, cfg in configs:
        where = "--listen" if listen is not None else f"listen in {cfg.data_dir}'s config"
        if (why := tcp_address_problem(cfg.listen)) is not None:
            raise ConfigError(f"{where}: {why}")
        check_listen_free(cfg.listen, where)
        _, host, port = listen_endpoint(cfg.listen)
        mine = listen_key(host, port)
        for other, other_dir, other_addr in taken:
            if listens_overlap(mine, other):
                raise ConfigError(
                    f"{cfg.data_dir} ({cfg.listen}) and {other_dir} ({other_addr}) would "
                    f"share TCP port {port}: give each node its own port, or port 0"
                )
        taken.append((mine, cfg.data_dir, cfg.listen))
    services: dict[str, Service] = {}
    if not no_api:
        port = api_port if api_port is not None else (configs[0][1].api_port or 0)
        port = port if not extra else 0
        where = "--api-port" if api_port is not None else "api_port in node.toml"
        check_api_apart(port, [cfg.listen for _, cfg in configs], where)
        check_port_free(port, where)
        services["api"] = api_service(port, where)
    if metrics_file is not None:
        from gossipmind.api import metrics_file as mf

        path = mf.check_path(metrics_file, data_dirs)
        services["metrics_file"] = mf.service(path, metrics_every)
    main = configs[0][1]
    conf_log = main.log_file if log_file is None else None  # (the flags: compared above)
    if status_file is not None and conf_log is not None and same_file(status_file, conf_log):
        raise click.UsageError(
            f"--status-file and log_file in {main.data_dir}'s config name the same file"
        )
    if main.log_file is not None:
        if log_file is None and (why := path_problem(main.log_file)) is not None:
            raise ConfigError(f"log_file in {main.data_dir}'s config: {why}")
        where = "--log-file" if log_file is not None else f"log_file in {main.data_dir}'s config"
        lock_log(main.log_file, where)  # held until the process exits
        handler = file_handler(main.log_file, main.log_max_bytes, main.log_backups)
        configure_logging(log_level, handler)  # from here on, nothing logs to stderr
    run(configs, status_every=status_every, services=services, status_file=status_file)


def _log_overrides(
    configured: Path | None,
    data_dir: Path,
    main: Path,
    log_file: Path | None,
    max_bytes: int | None,
    backups: int | None,
) -> dict[str, object]:
    """The log flags for the main data dir's config; for another one, nothing (a
    process has one log: the main data dir's node.toml or the flags name it)."""
    if data_dir != main:
        if configured is not None:
            raise ConfigError(
                f"log_file in {data_dir}'s config: a process has one log; set log_file in "
                "the main data dir's node.toml, or pass --log-file"
            )
        return {}
    return {"log_file": log_file, "log_max_bytes": max_bytes, "log_backups": backups}
