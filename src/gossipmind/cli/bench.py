"""`gossipmind bench`: each figure beside a limit measured in the same run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from gossipmind.cli.common import errors
from gossipmind.cli.output import err_console, print_json, table

Runner = Callable[[], dict[str, Any]]


def _show(results: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(results[0] if len(results) == 1 else results)
        return
    table(
        "benchmarks",
        ["name", "value", "baseline (same run)", "ratio", "target", "passed"],
        [
            [
                r["name"],
                f"{r['value']:,} {r['unit']}",
                f"{r['baseline']:,}",
                r["ratio"],
                r["target"],
                "[green]yes[/]" if r["passed"] else "[red]NO[/]",
            ]
            for r in results
        ],
    )


def _ingest(ops: int = 50_000, batch: int = 500) -> dict[str, Any]:
    from gossipmind.bench import ingest

    return ingest.run(ops, batch)


def _fingerprint() -> dict[str, Any]:
    from gossipmind.bench import fingerprint

    return fingerprint.run()


def _query(n: int = 20_000) -> dict[str, Any]:
    from gossipmind.bench import query

    return query.run(n)


ALL: dict[str, Runner] = {"ingest": _ingest, "fingerprint": _fingerprint, "query": _query}


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list when running all).")
@click.pass_context
@errors
def bench(ctx: click.Context, as_json: bool) -> None:
    """Benchmarks. With no subcommand, run them all and print one table."""
    ctx.ensure_object(dict)
    if ctx.invoked_subcommand is not None:
        return
    results = []
    for name, run in ALL.items():
        if not as_json:
            err_console.print(f"[dim]running {name}…[/]")
        results.append(run())
    _show(results, as_json)
    if not all(r["passed"] for r in results):
        raise click.exceptions.Exit(1)


@bench.command("ingest")
@click.option("--ops", "n", default=50_000, show_default=True, type=click.IntRange(1000))
@click.option("--batch", default=500, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@errors
def bench_ingest(n: int, batch: int, as_json: bool) -> None:
    """Ops/s applied by store+fold on a fresh store, beside the raw pipeline limit."""
    _show([_ingest(n, batch)], as_json)


@bench.command("fingerprint")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@errors
def bench_fingerprint(as_json: bool) -> None:
    """Fingerprint precision and recall on the labelled failure corpus."""
    _show([_fingerprint()], as_json)


@bench.command("query")
@click.option("--samples", default=20_000, show_default=True, type=click.IntRange(100, 10**7))
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@errors
def bench_query(samples: int, as_json: bool) -> None:
    """get_fix latency (SDK cache and HTTP) and @resilient overhead, beside a bare call."""
    _show([_query(samples)], as_json)
