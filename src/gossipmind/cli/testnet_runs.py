"""`gossipmind testnet scenario | chaos | attack`: runs against a running testnet.

Moved out of ``cli/testnet.py`` (which keeps the group and the commands that manage
the testnet: up, status, down, kill, stop, restart, start, partition, heal) so that
both stay under the module size limit; ``cli/testnet.py`` adds these commands to its
group. The ``--run-dir`` option and the :class:`~gossipmind.testnet.launcher.Testnet`
factory every testnet command shares live here, so that neither module imports the
other in a cycle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from gossipmind.cli.common import FloatRange, check_output_path, errors, json_option
from gossipmind.cli.interrupted import exit_on_signal
from gossipmind.cli.output import console, err_console, esc, print_json, table
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


@click.command("scenario")
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


@click.command("chaos")
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


@click.command("attack")
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
