"""`gossipmind bench`: each figure beside a limit measured in the same run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gossipmind.cli.common import FloatRange, errors
from gossipmind.cli.output import err_console, jsonable, print_json, styled, table
from gossipmind.core.errors import ConfigError, GossipmindError

Runner = Callable[[], dict[str, Any]]

CHILD_EXIT_GRACE = 20.0  # seconds an interrupted benchmark gets to close its nodes


def _json(as_json: bool) -> bool:
    """A subcommand's ``--json``, or the group's given before the subcommand."""
    obj = click.get_current_context().obj
    return as_json or (isinstance(obj, dict) and bool(obj.get("json")))


def _progress(as_json: bool, text: str) -> None:
    """Say on stderr what a long benchmark is doing (not with --json)."""
    if not as_json:
        err_console.print(f"[dim]{text}…[/]")


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
                styled("yes", "green") if r["passed"] else styled("NO", "red"),
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


MIN_SIZE, MAX_SIZE, MAX_SIZES = 2, 50, 8  # bench learning: 2 N nodes in one process per size


def _learning(sizes: tuple[int, ...] = (4, 8)) -> dict[str, Any]:
    from gossipmind.bench import learning

    return learning.run(sizes)


def _query(n: int = 20_000) -> dict[str, Any]:
    from gossipmind.bench import query

    return query.run(n)


ALL: dict[str, Runner] = {
    "ingest": _ingest,
    "fingerprint": _fingerprint,
    "query": _query,
    "learning": _learning,
}


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list when running all).")
@click.pass_context
@errors
def bench(ctx: click.Context, as_json: bool) -> None:
    """Benchmarks. With no subcommand, run them all, each in a fresh process, and print
    one table."""
    ctx.ensure_object(dict)
    if ctx.invoked_subcommand is not None:
        ctx.obj["json"] = as_json  # `bench --json <name>`: as `bench <name> --json`
        return
    results = []
    for name in ALL:
        if not as_json:
            err_console.print(f"[dim]running {name}…[/]")
        results.append(isolated(name))
    _show(results, as_json)
    if not all(r["passed"] for r in results):
        raise click.exceptions.Exit(1)


def isolated(name: str) -> dict[str, Any]:
    """Run the benchmark ``name`` of :data:`ALL` in a fresh interpreter and return its
    result: one benchmark's heap, threads and frozen objects must not weigh on the
    figures of the next (each is measured as if run alone). Its stderr is ours."""
    if name not in ALL:
        raise ConfigError(f"unknown benchmark {name!r}; one of {', '.join(ALL)}")
    with tempfile.TemporaryDirectory(prefix="gm-bench-") as tmp:
        path = Path(tmp) / "result.json"  # not stdout: a library may print there
        cmd = [sys.executable, "-m", "gossipmind.cli.bench", name, str(path)]
        # The child's temporary dirs (its nodes' data dirs) go under ours: whatever
        # becomes of the child, they are removed with ours.
        env = {**os.environ, "TMPDIR": tmp}
        proc = subprocess.Popen(cmd, stdout=2, env=env)  # its prints: our stderr
        try:
            proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the child too (one process group): let it close its
            # nodes and remove its dirs; kill it only if it does not exit in time.
            try:
                proc.wait(timeout=CHILD_EXIT_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        try:
            out = json.loads(path.read_text()) if proc.returncode == 0 else None
        except (OSError, json.JSONDecodeError):
            out = None
    if not isinstance(out, dict):
        raise GossipmindError(
            f"benchmark {name} failed (exit status {proc.returncode}); its errors are above"
        )
    return out


@bench.command("ingest")
@click.option(
    "--ops",
    "n",
    default=50_000,
    show_default=True,
    type=click.IntRange(1000, 10_000_000),
    help="Ops in the store to build.",
)
@click.option(
    "--batch",
    default=500,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Ops per transaction.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@errors
def bench_ingest(n: int, batch: int, as_json: bool) -> None:
    """Ops/s applied by store+fold on a fresh store, beside the raw pipeline limit."""
    as_json = _json(as_json)
    _progress(as_json, f"ingest: {n} ops into a fresh store, then the raw pipeline")
    _show([_ingest(n, batch)], as_json)


@bench.command("fingerprint")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@errors
def bench_fingerprint(as_json: bool) -> None:
    """Fingerprint precision and recall on the labelled failure corpus."""
    as_json = _json(as_json)
    _show([_fingerprint()], as_json)


@bench.command("query")
@click.option(
    "--samples",
    default=20_000,
    show_default=True,
    type=click.IntRange(100, 10**7),
    help="Timed calls per figure.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@errors
def bench_query(samples: int, as_json: bool) -> None:
    """get_fix latency (SDK cache and HTTP) and @resilient overhead, beside a bare call."""
    as_json = _json(as_json)
    _progress(as_json, f"query: {samples} timed calls per figure")
    _show([_query(samples)], as_json)


# --- network benchmarks (real libp2p nodes on 127.0.0.1) -------------------------------


def _convergence(nodes: int = 10, samples: int = 250) -> dict[str, Any]:
    from gossipmind.bench import convergence

    return convergence.run(nodes, samples)


def _catchup(nodes: int = 5, missing: int = 5000, base: int = 5000) -> dict[str, Any]:
    from gossipmind.bench import catchup

    return catchup.run(nodes, missing, base)


def _throughput(
    nodes: int = 10, seconds: float = 15.0, window: int = 2000, processes: int | None = None
) -> dict[str, Any]:
    from gossipmind.bench import throughput

    return throughput.run(nodes, seconds, window=window, processes=processes or nodes)


ALL.update({"convergence": _convergence, "catchup": _catchup, "throughput": _throughput})


@bench.command("convergence")
@click.option(
    "--nodes",
    default=10,
    show_default=True,
    type=click.IntRange(2, 50),
    help="Nodes in the cluster (one process).",
)
@click.option(
    "--samples",
    default=250,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Ops timed (and as many raw gossip messages).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@errors
def bench_convergence(nodes: int, samples: int, as_json: bool) -> None:
    """p99 time for an op to be applied on all nodes, beside raw gossipsub p99."""
    as_json = _json(as_json)
    _progress(as_json, f"convergence: {nodes} nodes, {samples} ops and as many raw messages")
    _show([_convergence(nodes, samples)], as_json)


@bench.command("catchup")
@click.option(
    "--nodes",
    default=5,
    show_default=True,
    type=click.IntRange(2, 50),
    help="Nodes in the cluster.",
)
@click.option(
    "--missing",
    default=5000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Ops the late node lacks (K).",
)
@click.option(
    "--base",
    default=5000,
    show_default=True,
    type=click.IntRange(0, 1_000_000),
    help="Ops every node already holds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@errors
def bench_catchup(nodes: int, missing: int, base: int, as_json: bool) -> None:
    """Sync bytes to catch up on missed ops / those ops' bytes; time beside K / ingest rate."""
    as_json = _json(as_json)
    _progress(as_json, f"catchup: {nodes} nodes, a late one missing {missing} of {base + missing}")
    _show([_catchup(nodes, missing, base)], as_json)


@bench.command("throughput")
@click.option(
    "--nodes",
    default=10,
    show_default=True,
    type=click.IntRange(2, 50),
    help="Nodes in the cluster.",
)
@click.option(
    "--seconds",
    default=15.0,
    show_default=True,
    type=FloatRange(1, 3600),
    help="How long to sustain writes.",
)
@click.option(
    "--window",
    default=2000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Ops in flight (not yet on every node) before writers pause.",
)
@click.option(
    "--processes",
    default=None,
    type=click.IntRange(1, 50),
    help="Processes the nodes run in  [default: one per node, as deployed; 1: all in this process]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@errors
def bench_throughput(
    nodes: int, seconds: float, window: int, processes: int | None, as_json: bool
) -> None:
    """Sustained ops/s with every node converging, beside cores x verify rate / N."""
    as_json = _json(as_json)
    from gossipmind.bench.throughput import WARMUP

    procs = min(processes or nodes, nodes)
    _progress(
        as_json,
        f"throughput: {nodes} nodes in {procs} process(es), {WARMUP:g} s warm-up + {seconds:g} s",
    )
    _show([_throughput(nodes, seconds, window, processes)], as_json)


@bench.command("learning")
@click.option(
    "--sizes",
    default="4,8",
    show_default=True,
    help=f"Fleet sizes N (comma-separated, each {MIN_SIZE} to {MAX_SIZE}; "
    f"at most {MAX_SIZES} sizes).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@errors
def bench_learning(sizes: str, as_json: bool) -> None:
    """Failures before recovery: a networked fleet of N against N isolated agents."""
    as_json = _json(as_json)
    hint = "'--sizes'"
    try:
        ns = tuple(int(x) for x in sizes.split(","))
    except ValueError:
        raise click.BadParameter("must be comma-separated integers", param_hint=hint) from None
    if not MIN_SIZE <= min(ns) <= max(ns) <= MAX_SIZE:
        raise click.BadParameter(
            f"every size must be between {MIN_SIZE} and {MAX_SIZE}", param_hint=hint
        )
    if len(ns) > MAX_SIZES:
        raise click.BadParameter(f"at most {MAX_SIZES} sizes", param_hint=hint)
    _show([_learning(ns)], as_json)


if __name__ == "__main__":  # one benchmark of ALL, its result as JSON: see isolated()
    Path(sys.argv[2]).write_text(json.dumps(jsonable(ALL[sys.argv[1]]())))
