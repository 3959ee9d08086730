"""`gossipmind testnet`: node processes on 127.0.0.1 under a run dir."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from gossipmind.cli.common import FloatRange, check_output_path, errors, json_option
from gossipmind.cli.interrupted import exit_on_signal, until_started
from gossipmind.cli.output import console, err_console, esc, print_json, short, styled, table
from gossipmind.core.errors import ConfigError

P = ParamSpec("P")
R = TypeVar("R")

RUN_DIR_ENV = "GOSSIPMIND_TESTNET_DIR"


def run_dir_option(fn: Callable[P, R]) -> Callable[P, R]:
    return click.option(
        "--run-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar=RUN_DIR_ENV,
        default=Path("testnet") / ".run",
        show_default=True,
        help=f"Where the testnet lives; relative to the current directory (env: {RUN_DIR_ENV}).",
    )(fn)


def _testnet(run_dir: Path) -> Any:
    from gossipmind.testnet.launcher import Testnet

    return Testnet(run_dir)


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


@testnet.command("scenario")
@click.argument("scenario_file")
@click.option("--short", is_flag=True, help="Fewer calls per agent.")
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write an HTML report (and a .json summary beside it).",
)
@run_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@errors
def scenario(
    scenario_file: str, short: bool, report: Path | None, run_dir: Path, as_json: bool
) -> None:
    """Run a scenario (a TOML file, or a name from testnet/scenarios/) against the
    running testnet: simulated agents on its member nodes call a fault-injecting
    service through the SDK, and the timeline of what the network learned is shown.

    The testnet keeps running. Its genesis policy is the one it was started with
    (the scenario's [policy] and [network] apply only to `gossipmind demo`): under
    the default policy a payments fix is medium risk and needs a tier-2 verifier,
    which `testnet up` does not make, so flaky-payments learns nothing there.
    Only the scenario's own pattern and its fixes are followed; what the testnet
    held before the run (an earlier run's fixes) is shown as known, not as news.

    Exits 1, with one line on stderr, if the run does not meet the scenario's
    `expect`: "fix" (a fix for its pattern is accepted by the end) or "no_fix"
    (none is).
    """
    from gossipmind.testnet import scenario as scenarios
    from gossipmind.testnet.demo import show_summary
    from gossipmind.testnet.report import html_report, summary, unmet
    from gossipmind.testnet.run import Runner

    if report is not None:
        check_output_path(report, "--report")
        check_output_path(report.with_suffix(".json"), "--report")
    sc = scenarios.load(scenario_file)
    if short:
        sc = sc.shortened(0.5)
    tn = _testnet(run_dir)
    if not tn.exists():
        raise ConfigError(f"no testnet in {run_dir}; start one with `gossipmind testnet up`")
    quiet = as_json

    def on_event(e: Any) -> None:
        if not quiet:
            console.print(f"{e.t:6.1f}s  {esc(e.text)}")

    result = Runner(tn, sc, on_event=on_event).run()
    s = summary(result)
    if report is not None:
        report.write_text(html_report(result))
        report.with_suffix(".json").write_text(json.dumps(s, indent=2) + "\n")
    if as_json:
        print_json(s)
    else:
        show_summary(console, s, result)
    failed = unmet(s)
    if failed is not None:
        click.secho(f"expectation not met: {failed}", err=True, fg="red")  # never wrapped
        raise click.exceptions.Exit(1)


@testnet.command("chaos")
@click.option(
    "--duration",
    type=FloatRange(5, 3600),
    default=120.0,
    show_default=True,
    help="Seconds of faults while agents write.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the fault schedule.")
@click.option(
    "--writers",
    type=click.IntRange(1, 32),
    default=3,
    show_default=True,
    help="Concurrent writers (through the nodes' local APIs).",
)
@run_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@errors
def chaos(duration: float, seed: int, writers: int, run_dir: Path, as_json: bool) -> None:
    """Run a seeded schedule of SIGKILL/restart, partition/heal and lossy/slow links
    against the running testnet while writers write; then check that every state
    root is equal and every acknowledged op is on every node. Exit 1 if not.

    It acts on the nodes running at its start. A SIGKILL takes the victim's whole
    process (--per-process > 1: its siblings too). However it ends (an error,
    Ctrl-C, SIGTERM, SIGHUP included), it first heals, clears every lossy link
    and restarts the processes it killed.
    """
    from gossipmind.testnet.chaos import Chaos

    tn = _testnet(run_dir)
    if not tn.exists():
        raise ConfigError(f"no testnet in {run_dir}; start one with `gossipmind testnet up`")

    def show(t: float, what: str) -> None:
        if not as_json:
            console.print(f"{t:6.1f}s  {esc(what)}")

    run = Chaos(tn, duration=duration, seed=seed, writers=writers, on_action=show)
    with exit_on_signal("the run after lifting its faults (see above)"):
        res = run.run()
    s = res.summary()
    if as_json:
        print_json(s)
    else:
        console.print(f"mode: {esc(s['mode'])}")
        console.print(
            f"{s['acked_ops']} ops acknowledged during {s['duration_s']:.0f}s of chaos "
            f"({s['kills']} kills, {s['partitions']} partitions, {s['link_faults']} lossy links)"
        )
        missing = sum(s["missing"].values())
        roots = "one state root" if s["converged"] else "roots differ"
        console.print(
            f"converged in {s['converge_s']}s: {roots}; acknowledged ops missing: {missing}"
        )
        for what in s["unlifted"]:
            err_console.print(esc(f"not lifted: {what}"), style="red")
    if not res.ok:
        raise click.exceptions.Exit(1)


@testnet.command("attack")
@click.argument("kind", required=False)
@click.option("--count", "-c", type=click.IntRange(1), help="How much to send (default: per kind).")
@click.option(
    "--target",
    "-t",
    help="The node the hostile peer connects to (default: the first node after node-0).",
)
@click.option("--list", "list_kinds", is_flag=True, help="List the attacks and exit.")
@run_dir_option
@json_option
@errors
def attack(
    kind: str | None,
    count: int | None,
    target: str | None,
    list_kinds: bool,
    run_dir: Path,
    as_json: bool,
) -> None:
    """Join the running testnet as a hostile peer, perform one attack KIND, and show
    what the honest nodes did: rejections by reason, sync failures, pending buffer,
    memory of their processes, whether they kept serving (an honest op written
    during and one after the attack reach every node) and whether their state
    roots are equal at the end. Exits 1 if any of that failed.

    KIND is one of: forged-signature, replay, non-canonical, oversized-frame,
    truncated-frame, equivocation, missing-deps, pending-flood,
    unauthorized-attest, revoked-key, spam-reports, junk-gossip,
    reconnect-flood, slow-sync (`--list` says what each sends). Attacks that
    need a compromised member use the key of an unused spare (`testnet up
    --spares N`); revoked-key has node-0 revoke one first.
    """
    from gossipmind.testnet import attack as attacks

    if list_kinds or kind is None:
        rows = [[k.name, k.default, k.unit, k.summary] for k in attacks.KINDS.values()]
        if as_json:
            print_json(
                [dict(zip(("kind", "default", "unit", "what"), r, strict=True)) for r in rows]
            )
        else:
            table("attacks", ["kind", "default count", "unit", "what it sends"], rows)
        if kind is None and not list_kinds:
            raise ConfigError("name an attack KIND (see the list above)")
        return
    result = attacks.run(_testnet(run_dir), kind, count, target)
    if as_json:
        print_json(result.as_dict())
    else:
        _show_attack(result)
    if not result.ok:
        raise click.exceptions.Exit(1)


def _show_attack(r: Any) -> None:
    s = r.sent
    rate = f", {s['per_second']}/s" if s["per_second"] else ""
    console.print(
        f"[bold]{esc(r.kind)}[/] against {esc(r.target)}: {s['ops']} ops, {s['messages']} gossip "
        f"messages, {s['frames']} sync frames/streams, {s['bytes']} bytes in {s['seconds']} s{rate}"
    )
    if r.details:
        console.print(f"  {esc(json.dumps(r.details, default=str))}")

    def reasons(d: dict[str, int]) -> str:
        return " ".join(f"{k}:{v}" for k, v in d.items()) or "-"

    table(
        "honest nodes (changes during the attack)",
        ["node", "rejected at ingest", "gossip rejected", "sync failed", "pending", "RSS MiB"],
        [
            [
                name,
                reasons(n["rejected_by_reason"]),
                reasons(n["gossip_rejected"]),
                reasons(n["sync_failed_by_reason"]),
                f"{n['pending'][0]}→{n['pending'][1]}",
                f"{n['rss_kib'][0] // 1024}→{n['rss_kib'][1] // 1024}",
            ]
            for name, n in r.nodes.items()
        ],
    )
    for o in r.expected:
        mark = "[green]✓[/]" if o.met else "[red]✗[/]"
        console.print(f"  {mark} {esc(f'{o.key} ≥ {o.count} on {o.nodes}: {o.seen}')}")
    if r.checks:
        console.print(f"  checks: {esc(json.dumps(r.checks, default=str))}")
    ok = "[green]yes[/]"
    no = "[red]NO[/]"
    spread = esc(", ".join(f"{k} {'-' if v is None else f'{v} s'}" for k, v in r.honest.items()))
    console.print(f"  kept serving: {ok if r.serving else no}; honest ops reached all: {spread}")
    console.print(f"  time to reject: {r.time_to_reject_s if r.time_to_reject_s else '-'} s")
    console.print(
        f"  equal state roots: {ok if r.roots_equal else no}; leaked: {esc(r.leaked or 'none')}"
    )
    if not r.ok:
        err_console.print("[red]the honest nodes did not hold up: see above[/]")
