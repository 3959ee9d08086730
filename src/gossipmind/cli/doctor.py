"""`gossipmind doctor`: check a data dir read-only (works while the node runs)."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from gossipmind.cli.common import Ctx, errors, is_utf8, json_option, pass_ctx, with_raw_bytes
from gossipmind.cli.output import console, esc, print_json
from gossipmind.store.doctor import ERROR, WARNING, Diagnosis, diagnose

_STYLE = {ERROR: "bold red", WARNING: "yellow"}


@click.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option(
    "--skip-signatures",
    is_flag=True,
    help="Do not verify op signatures (faster; everything else is still checked).",
)
@json_option
@pass_ctx
@errors
def doctor(ctx: Ctx, path: Path | None, skip_signatures: bool, as_json: bool) -> None:
    """Check a data dir without changing it: SQLite integrity, every op's encoding,
    id, signature and causal order, the fold recomputed against the materialised
    state, pending and rejected ops, and key file permissions.

    PATH is a data dir or a store file (default: the data dir). Exit status: 0
    healthy (warnings allowed), 1 the store could not be read (disk full,
    permissions, a read-only directory: not damage), 3 no data directory at
    PATH, 4 PATH is a file that is not a gossipmind store (a wrong file: not
    damage), 5 damaged or inconsistent store (a data dir's kb.sqlite3 that is
    missing or not a database included), 6 only unsafe file permissions.
    """
    target = path.expanduser().resolve() if path is not None else ctx.dir.root
    if not is_utf8(str(target)):
        raise click.BadParameter(
            f"'{with_raw_bytes(str(target))}' is not a UTF-8 path: doctor cannot check it "
            "(rename it)",
            param_hint="'PATH'" if path is not None else "'--data-dir'",
        )
    diag = diagnose(target, signatures=not skip_signatures)
    if as_json:
        print_json(diag.to_doc())
    else:
        _print(diag)
    if diag.exit_code:
        raise click.exceptions.Exit(diag.exit_code)


def _print(diag: Diagnosis) -> None:
    st = diag.stats
    out = functools.partial(console.print, soft_wrap=True)
    out(f"[bold]data dir[/]  {esc(diag.data_dir)}")
    if "network" in st:
        out(
            f"[bold]store[/]     {st['store_bytes']} bytes (wal {st['wal_bytes']}), "
            f"schema {st['schema_version']}, integrity {esc(st.get('integrity', '-'))}"
        )
        out(f"[bold]network[/]   {st['network'].hex()}")
    if "ops" in st:
        kinds = ", ".join(f"{k} {n}" for k, n in st["ops_by_kind"].items())
        out(
            f"[bold]ops[/]       {st['ops']} ({esc(kinds)}); "
            f"signatures verified {st['signatures_verified']}"
        )
    if "pending" in st:
        reasons = ", ".join(f"{k} {n}" for k, n in st.get("rejected_by_code", {}).items())
        out(
            f"[bold]pending[/]   {st['pending']} ({st['pending_bytes']} bytes)   "
            f"[bold]rejected[/] {st.get('rejected', 0)}" + (f" ({esc(reasons)})" if reasons else "")
        )
    if "root" in st:
        out(f"[bold]root[/]      {st['root'].hex()} (recomputed from the ops)")
    if "heads" in st:
        fixes = ", ".join(f"{k} {n}" for k, n in sorted(st["fixes"].items())) or "none"
        out(
            f"[bold]fold[/]      heads {st['heads']}, authors {st['authors']}, "
            f"patterns {st['patterns']} ({st['over_threshold']} over threshold), "
            f"fixes {fixes}, equivocations {st['equivocations']}"
        )
    for f in diag.findings:
        style = _STYLE.get(f.severity, "dim")
        out(f"[{style}]{f.severity.upper():7}[/] {f.check:18} {esc(f.message)}")
    n = diag.error_count
    if n:
        out(f"[bold red]{n} problem{'s' if n != 1 else ''} found[/]")
    else:
        out("[bold green]healthy[/]")


__all__ = ["doctor"]
