"""`gossipmind demo`: a local testnet that learns a fix, told in numbers."""

from __future__ import annotations

from pathlib import Path

import click

from gossipmind.cli.common import check_output_path, errors
from gossipmind.cli.output import console


@click.command()
@click.option(
    "--scenario",
    default="flaky-payments",
    show_default=True,
    help="A scenario name from testnet/scenarios/ or a TOML file.",
)
@click.option("--short", is_flag=True, help="Fewer calls per agent (for tests and slow machines).")
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("gossipmind-report.html"),
    show_default=True,
    help="Where to write the HTML report (a .json summary goes beside it).",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run dir of the testnet (default: a fresh temporary one).",
)
@click.option(
    "--per-process",
    type=click.IntRange(1, 16),
    default=2,
    show_default=True,
    help="Nodes per process (2 keeps 6 nodes light on 2 cores).",
)
@click.option("--keep", is_flag=True, help="Leave the testnet running afterwards.")
@errors
def demo(
    scenario: str, short: bool, report: Path, run_dir: Path | None, per_process: int, keep: bool
) -> None:
    """Start a local testnet, run a scenario, and show the fleet learning a fix.

    Simulated agents call a fault-injecting service through the real SDK; the
    network reduces their failures to patterns, synthesizes and drills a fix in
    sleep time, verifiers attest it, and every agent applies it. Ends with a
    summary, an HTML report with the learning curve, and stops every process.

    The testnet gets the scenario's [network] and [policy]. Exits 1, with one line
    on stderr, if the run does not meet the scenario's `expect` ("fix": a fix for
    its pattern is accepted; "no_fix": none is) or the nodes do not converge.
    """
    from gossipmind.testnet import scenario as scenarios
    from gossipmind.testnet.demo import run_demo
    from gossipmind.testnet.report import unmet

    check_output_path(report, "--report")
    check_output_path(report.with_suffix(".json"), "--report")
    sc = scenarios.load(scenario)
    if short:
        sc = sc.shortened(0.5)
    outcome = run_demo(
        sc, console=console, run_dir=run_dir, report=report, per_process=per_process, keep=keep
    )
    s = outcome.summary
    failed = unmet(s)
    if failed is None and not s["converged"]:
        failed = f"{sc.name}: the nodes did not converge on one state root"
    if failed is not None:
        click.secho(f"expectation not met: {failed}", err=True, fg="red")  # never wrapped
        raise click.exceptions.Exit(1)
