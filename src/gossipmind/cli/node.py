"""`gossipmind node`: the daemon beside an agent."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from gossipmind.cli.common import Ctx, errors, pass_ctx
from gossipmind.node.config import load_config


@click.command("node")
@click.option("--listen", help="libp2p listen multiaddr (default /ip4/127.0.0.1/tcp/0).")
@click.option(
    "--bootstrap",
    "bootstrap",
    multiple=True,
    help="A peer to join through: /ip4/…/tcp/…/p2p/… (repeatable).",
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
    "--sync-interval", type=click.FloatRange(0.1, 3600), help="Seconds between anti-entropy rounds."
)
@click.option(
    "--status-every",
    type=click.FloatRange(0),
    default=0.0,
    help="Print a status JSON line every N seconds (0: never).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Level of the JSON logs on stderr.",
)
@click.option("--debug-libp2p", is_flag=True, default=None, help="Let libp2p log (noisy).")
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Local HTTP API port on 127.0.0.1 (default: api_port in node.toml, else 0 = any "
    "free port; the port in use is in api.json in the data dir).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The passphrase of an encrypted identity key, in a file (or set GOSSIPMIND_PASSPHRASE).",
)
@click.option("--no-api", is_flag=True, help="Do not serve the local HTTP API.")
@click.option(
    "--extra-data-dir",
    "extra",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Host another node (its own data dir) in this process (repeatable).",
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
    log_level: str,
    debug_libp2p: bool | None,
    api_port: int | None,
    passphrase_file: Path | None,
    no_api: bool,
    extra: tuple[Path, ...],
) -> None:
    """Run the node in the foreground until Ctrl-C / SIGTERM.

    Prints one JSON line per node when it is ready (its multiaddrs), then JSON
    logs on stderr. Joining a network = --genesis FILE + one --bootstrap address.
    """
    from gossipmind.node.daemon import Service, configure_logging, run

    configure_logging(log_level)
    passphrase = (
        passphrase_file.read_text().strip()
        if passphrase_file
        else os.environ.get("GOSSIPMIND_PASSPHRASE")
    )
    configs = []
    for data_dir in (ctx.dir.root, *(p.resolve() for p in extra)):
        cfg = load_config(data_dir, config_file if data_dir == ctx.dir.root else None)
        cfg = cfg.with_overrides(
            listen=listen,
            genesis_file=genesis,
            verifier=verifier,
            sync_interval=sync_interval,
            debug_libp2p=debug_libp2p,
            bootstrap=tuple(bootstrap) or None,
            passphrase=passphrase,
        )
        configs.append((data_dir.name, cfg))
    services: dict[str, Service] = {}
    if not no_api:
        from gossipmind.api.server import serve_api

        port = api_port if api_port is not None else (configs[0][1].api_port or 0)
        services["api"] = functools.partial(serve_api, port=port if not extra else 0)
    run(configs, status_every=status_every, services=services)
