"""`gossipmind testnet`: node processes on 127.0.0.1 under a run dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gossipmind.cli.common import (
    FloatRange,
    check_log_backups,
    check_log_max_bytes,
    errors,
    json_option,
)
from gossipmind.cli.interrupted import until_started
from gossipmind.cli.output import console, err_console, esc, print_json, short, styled, table
from gossipmind.cli.testnet_runs import (
    _testnet,
    attack,
    chaos,
    run_dir_option,
    scenario,
)
from gossipmind.testnet.state import LOG_BACKUPS, LOG_MAX_BYTES


def _show(rows: list[dict[str, Any]], as_json: bool, title: str) -> None:
    if as_json:
        print_json(rows)
        return
    table(
        title,
        ["node", "role", "state", "pid", "peers", "ops", "root", "conv", "group", "link"],
        [
            [
                r["name"],
                r["role"],
                styled(r["state"], "yellow") if r["state"] == "unresponsive" else r["state"],
                r["pid"] or "-",
                "-" if r["peers"] is None else r["peers"],
                "-" if r["ops"] is None else r["ops"],
                short(r["root"], 10) if r["root"] else "-",
                styled("✓", "green") if r["converged"] else styled("✗", "red"),
                "-" if r["group"] is None else r["group"],
                _link(r["link_faults"]),
            ]
            for r in rows
        ],
    )
    from gossipmind.testnet.statusrows import builds_note

    if note := builds_note(rows):  # a rolling upgrade: which nodes run which code
        err_console.print(esc(note), style="yellow")


def _link(faults: dict[str, float] | None) -> Any:
    """A lossy/slow link in the status table: ``drop 0.47 ≤0.04s``, or ``-``."""
    if not faults:
        return "-"
    return styled(f"drop {faults['drop']:g} ≤{faults['delay_s']:g}s", "yellow")


@click.group()
def testnet() -> None:
    """A local testnet: N node processes on 127.0.0.1 with a generated genesis.

    `up` creates keys, a genesis and grants under the run dir and starts the
    nodes; the other commands act on that testnet from any shell.
    """


@testnet.command("up")
@click.option(
    "--nodes",
    "-n",
    default=5,
    show_default=True,
    type=click.IntRange(1, 200),
    help="Nodes to start.",
)
@click.option(
    "--verifiers",
    "-v",
    default=1,
    show_default=True,
    type=click.IntRange(0),
    help="Nodes 1..V are tier-1 verifiers for every scope (node-0 is the admin).",
)
@click.option(
    "--per-process",
    "-k",
    default=1,
    show_default=True,
    type=click.IntRange(1, 200),
    help="Nodes hosted by one process (scale on few cores).",
)
@click.option(
    "--spares",
    default=0,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Extra granted data dirs not started now (start them later: late joiners).",
)
@click.option(
    "--status-every",
    default=1.0,
    show_default=True,
    type=FloatRange(0.1, 60),
    help="Seconds between the status lines each node logs.",
)
@click.option(
    "--sync-interval",
    type=FloatRange(0.1, 3600),
    help="Seconds between anti-entropy rounds (node default if unset).",
)
@click.option(
    "--open-membership",
    is_flag=True,
    help="Genesis policy: anyone holding the genesis may write (no grant needed to join).",
)
@click.option(
    "--log-max-bytes",
    type=int,
    default=LOG_MAX_BYTES,
    show_default=True,
    callback=check_log_max_bytes,
    help="Rotate each node process's logs/<proc>.log when it would reach this size (at "
    "least 1024; 0: never rotate): at most --log-backups + 1 files of this size. Kept "
    "for the testnet's life: `restart`, `start` and chaos restarts use it too.",
)
@click.option(
    "--log-backups",
    type=int,
    default=LOG_BACKUPS,
    show_default=True,
    callback=check_log_backups,
    help="Rotated files kept besides each logs/<proc>.log: <proc>.log.1 (newest) … "
    "<proc>.log.N (1 to 1000).",
)
@click.option(
    "--timeout",
    type=FloatRange(1, 3600),
    help="Give up if the nodes are not ready and connected within this many seconds "
    "[default: 45 + 2 per process].",
)
@run_dir_option
@json_option
@errors
def up(
    nodes: int,
    verifiers: int,
    per_process: int,
    spares: int,
    status_every: float,
    sync_interval: float | None,
    open_membership: bool,
    log_max_bytes: int,
    log_backups: int,
    timeout: float | None,
    run_dir: Path,
    as_json: bool,
) -> None:
    """Create a testnet and start its nodes; wait until all are connected.

    If that fails, or `up` is interrupted (Ctrl-C, SIGTERM, SIGHUP), it stops
    the processes it started (interrupted: exit 128 + the signal number, 130
    for Ctrl-C). A signal once all are connected is ignored (exit 0).
    """
    from gossipmind.core.policy import Policy

    if verifiers >= nodes:
        raise click.BadParameter("must be smaller than --nodes", param_hint="--verifiers")
    tn = _testnet(run_dir)
    tn.check_free()
    if not as_json:
        procs = -(-nodes // per_process)
        err_console.print(
            f"[dim]starting {nodes} nodes in {procs} processes under {esc(tn.run_dir)}…[/]"
        )
    settings = {"sync_interval": sync_interval} if sync_interval is not None else None
    with until_started("the processes it had started"):
        rows = tn.up(
            nodes,
            verifiers,
            per_process=per_process,
            spares=spares,
            status_every=status_every,
            log_max_bytes=log_max_bytes,
            log_backups=log_backups,
            settings=settings,
            policy=Policy(open_membership=open_membership),
            timeout=timeout,
        )
        _show(rows, as_json, f"testnet up: {tn.run_dir}")
        if not as_json:
            run = tn.run_dir
            console.print(f"genesis: {esc(run / 'genesis.json')}   logs: {esc(run / 'logs')}")
            console.print(f"join it: --genesis … --bootstrap {esc(rows[0]['addr'])}")


@testnet.command("status")
@run_dir_option
@json_option
@errors
def status(run_dir: Path, as_json: bool) -> None:
    """Per node: role, state, peers, ops, state root, converged (same root as the majority).

    Ops and roots come from each node's SQLite file, so stopped nodes show too.
    The majority is that of the running nodes (stopped stores do not vote, unless
    no node runs). A node whose process runs but has logged no status line for a
    few status intervals (e.g. frozen by SIGSTOP) is "unresponsive": peers "-",
    not converged. One whose process has logged nothing yet since it started is
    "starting" (not converged), and "unresponsive" once that lasts a few status
    intervals. "link": a lossy/slow link (`chaos` sets it, `heal` clears it).
    With --json each row also has the git commit its node runs; when the running
    nodes run more than one (a rolling upgrade), a note says which run which.
    """
    tn = _testnet(run_dir)
    rows = tn.status()
    _show(rows, as_json, f"testnet: {tn.run_dir}")
    if not rows and not as_json:
        msg = "no nodes: `up` ended before it created them; `testnet down --purge` deletes it"
        err_console.print(msg, style="yellow")


@testnet.command("down")
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=FloatRange(0.1, 600),
    help="Seconds to wait after SIGTERM before SIGKILL.",
)
@click.option("--purge", is_flag=True, help="Delete the run dir (data, keys, logs) afterwards.")
@run_dir_option
@json_option
@errors
def down(timeout: float, purge: bool, run_dir: Path, as_json: bool) -> None:
    """Stop exactly the processes this testnet started (none else)."""
    tn = _testnet(run_dir)
    report = tn.down(timeout=timeout, purge=purge)
    if as_json:
        print_json(report)
    else:
        for r in report:
            nodes = ", ".join(r["nodes"])
            console.print(esc(f"{r['process']} (pid {r['pid']}, {nodes}): {r['how']}"))
        if not report:
            console.print("no process was running")
    if purge and not as_json:
        console.print(f"deleted {esc(tn.run_dir)}")
    if any(r["how"] == "SURVIVED SIGKILL" for r in report):
        raise click.exceptions.Exit(1)


def _siblings_note(result: dict[str, Any], verb: str) -> None:
    line = f"{verb} {result['node']} (process {result['process']}, pid {result['pid']})"
    if result["siblings"]:
        line += f"; it also hosts {', '.join(result['siblings'])}, {verb} too"
    console.print(esc(line))
    lonely = result.get("unconnected")
    if lonely:
        err_console.print(
            esc(
                f"warning: {', '.join(lonely)} running but without a peer yet (no peer in time); "
                "it keeps dialing: see `gossipmind testnet status`"
            ),
            style="yellow",
        )


@testnet.command("kill")
@click.argument("node")
@run_dir_option
@errors
def kill(node: str, run_dir: Path) -> None:
    """SIGKILL the process hosting NODE (a name like node-3, or 3).

    With --per-process > 1 this takes down the other nodes of that process too.
    """
    _siblings_note(_testnet(run_dir).kill(node), "killed")


@testnet.command("stop")
@click.argument("node")
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=FloatRange(0.1, 600),
    help="Seconds to wait after SIGTERM before SIGKILL.",
)
@run_dir_option
@errors
def stop(node: str, timeout: float, run_dir: Path) -> None:
    """Stop the process hosting NODE cleanly (SIGTERM); `start NODE` brings it back.

    While stopped, its data dir is free for offline commands, e.g. the admin's
    `gossipmind --data-dir RUN/node-0 grant KEY --role member`.
    A process that does not exit within --timeout of SIGTERM is SIGKILLed: the
    command then says "killed" (exit code 0), or exits 1 if it survives SIGKILL.
    """
    result = _testnet(run_dir).stop(node, timeout=timeout)
    how = result["how"]
    if how == "SURVIVED SIGKILL":
        who = f"{result['node']}'s process {result['process']} (pid {result['pid']})"
        click.echo(f"error: {who} survived SIGTERM and SIGKILL: it still runs", err=True)
        raise click.exceptions.Exit(1)
    killed = how.startswith("killed")  # else "stopped" (or "already …": it ended by itself)
    _siblings_note(result, "killed" if killed else "stopped")
    if how != "stopped":
        late = f"no exit within {timeout:g} s of SIGTERM, so SIGKILLed: not a clean stop"
        err_console.print(esc(f"warning: {late if killed else how}"), style="yellow")


@testnet.command("restart")
@click.argument("node")
@click.option(
    "--timeout", type=FloatRange(1, 3600), help="Seconds to wait for ready [default: 47]."
)
@run_dir_option
@errors
def restart(node: str, timeout: float | None, run_dir: Path) -> None:
    """Restart NODE's process with the same data dirs; it catches up by sync.

    If the process is not ready within --timeout, it is stopped again and the
    exit code is 1. If it is ready but has no peer in time, it keeps running
    (it goes on dialing): a warning, exit code 0. Interrupted (Ctrl-C, SIGTERM,
    SIGHUP) before it is ready, it stops the process it started: exit 128 + the
    signal number (130 for Ctrl-C).
    """
    with until_started("the process it had started"):
        result = _testnet(run_dir).restart(node, timeout=timeout)
        _siblings_note(result, "restarted")


@testnet.command("start")
@click.argument("node")
@click.option(
    "--timeout", type=FloatRange(1, 3600), help="Seconds to wait for ready [default: 47]."
)
@run_dir_option
@errors
def start(node: str, timeout: float | None, run_dir: Path) -> None:
    """Start a stopped node (its whole process) or a spare (a late joiner).

    If the process is not ready within --timeout, it is stopped again and the
    exit code is 1. If it is ready but has no peer in time, it keeps running
    (it goes on dialing): a warning, exit code 0. Interrupted (Ctrl-C, SIGTERM,
    SIGHUP) before it is ready, it stops the process it started: exit 128 + the
    signal number (130 for Ctrl-C).
    """
    with until_started("the process it had started"):
        result = _testnet(run_dir).start(node, timeout=timeout)
        _siblings_note(result, "started")


@testnet.command("partition")
@click.argument("groups", nargs=-1, required=True)
@run_dir_option
@errors
def partition(groups: tuple[str, ...], run_dir: Path) -> None:
    """Split the testnet: each GROUP is comma-separated nodes (names or indices).

    Nodes in no group form one more group. Example: `partition 0,1 2,3,4`
    (no spaces inside a group, no empty items).
    Application-level: each node refuses the peers of the other groups.
    """
    blocks = _testnet(run_dir).partition([g.split(",") for g in groups])
    for name, blocked in blocks.items():
        console.print(esc(f"{name} blocks {', '.join(blocked) or 'nobody'}"))


@testnet.command("heal")
@run_dir_option
@errors
def heal(run_dir: Path) -> None:
    """End the partition and clear every lossy/slow link (`testnet chaos` sets them):
    every node accepts every peer again, at full speed (they reconnect and sync)."""
    _testnet(run_dir).heal()
    console.print("healed")


# runs against a running testnet (cli/testnet_runs.py)
testnet.add_command(scenario)
testnet.add_command(chaos)
testnet.add_command(attack)
