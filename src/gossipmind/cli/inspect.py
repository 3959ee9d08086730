"""Inspection commands: read the local store, never write (work with the node stopped)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from gossipmind.cli.common import Ctx, errors, json_option, pass_ctx
from gossipmind.cli.common import id_prefix as checked_prefix
from gossipmind.cli.output import console, esc, jsonable, print_json, short, table
from gossipmind.core.checks import name as schema_name
from gossipmind.core.errors import SchemaError
from gossipmind.core.ops import KINDS
from gossipmind.core.snapshot import FIX_STATUSES


def _when(ts_ms: object) -> str:
    """An op's signed timestamp (ms, UTC) as a date; ``?`` for one no date can show
    (an author's clock, or a forger, can sign any 64-bit value)."""
    if not ts_ms:
        return "-"
    if not isinstance(ts_ms, int | float):
        return "?"
    try:
        when = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    except (OverflowError, ValueError, OSError):
        return "?"
    return when.strftime("%Y-%m-%d %H:%M:%S")


def recipe_summary(recipe: dict[str, object]) -> str:
    steps = recipe.get("steps", [])
    assert isinstance(steps, list)
    parts = []
    for s in steps:
        args = ",".join(f"{k}={_scalar(v)}" for k, v in s.items() if k != "type")
        parts.append(f"{s['type']}({args})")
    return " → ".join(parts)


def _scalar(value: object) -> str:
    """A recipe argument: a string or number as it is, else compact JSON (``true``,
    ``["timeout"]``), not a Python repr."""
    return value if isinstance(value, str) else _json(value)


@click.command()
@json_option
@pass_ctx
@errors
def status(ctx: Ctx, as_json: bool) -> None:
    """Network, ops, heads and state root of the local replica."""
    with ctx.reader() as r:
        st = r.status()
    if as_json:
        print_json(st)
        return
    console.print(f"[bold]network[/]  {st['network'].hex()}  ({esc(st['name'])})")
    console.print(f"[bold]root[/]     {st['root'].hex()}")
    kinds = ", ".join(f"{k} {n}" for k, n in st["ops_by_kind"].items())
    console.print(f"[bold]ops[/]      {st['ops']}  ({esc(kinds)})")
    console.print(
        f"[bold]heads[/]    {len(st['heads'])}  {' '.join(short(h) for h in st['heads'])}"
    )
    console.print(f"[bold]pending[/]  {st['pending']}   [bold]rejected[/] {st['rejected']}")
    fixes = ", ".join(f"{k} {n}" for k, n in sorted(st["fixes"].items())) or "none"
    console.print(
        f"[bold]members[/]  {st['members']}   [bold]patterns[/] {st['patterns']}   "
        f"[bold]fixes[/] {esc(fixes)}   [bold]goals[/] {st['goals']}"
    )
    if st["equivocations"]:
        console.print(f"[red]equivocations {st['equivocations']}[/]")


def _service_name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A service is a schema name (a report's service is reduced to one): refuse
    anything else now, rather than match nothing."""
    if value is None:
        return None
    try:
        schema_name(64)(value, "--service")
    except SchemaError:
        raise click.BadParameter(
            f"{value!r} is not a service name: lowercase [a-z0-9][a-z0-9._/-]*, "
            "at most 64 characters"
        ) from None
    return value


@click.command()
@click.option("--service", callback=_service_name, help="Only patterns of this service.")
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Show at most this many.",
)
@json_option
@pass_ctx
@errors
def patterns(ctx: Ctx, service: str | None, limit: int, as_json: bool) -> None:
    """Failure patterns: fleet counts and distinct reporters.

    A `*` after the reporters: the pattern is over the network's synthesis
    threshold (enough distinct reporters for nodes to propose fixes for it;
    `over_threshold` in --json).
    """
    with ctx.reader() as r:
        rows = r.patterns(service=service, limit=limit)
    if as_json:
        print_json(rows)
        return
    table(
        "patterns",
        ["pattern", "service/op", "class", "count", "reporters", "template", "last seen"],
        [
            [
                short(p["pattern"]),
                f"{p['service']}/{p['operation']}",
                p["error_class"],
                p["count"],
                f"{p['reporters']}{'*' if p['over_threshold'] else ''}",
                p["template"][:60],
                _when(p["last_ts"]),
            ]
            for p in rows
        ],
    )
    if any(p["over_threshold"] for p in rows):
        console.print("* over the synthesis threshold: enough reporters to learn a fix")


@click.command()
@click.option(
    "--status",
    "status_",
    type=click.Choice(FIX_STATUSES),
    help="Only fixes with this status.",
)
@json_option
@pass_ctx
@errors
def fixes(ctx: Ctx, status_: str | None, as_json: bool) -> None:
    """Fixes: recipe, risk, attestations, status and outcomes."""
    with ctx.reader() as r:
        rows = r.fixes(status=status_)
    if as_json:
        print_json(rows)
        return
    table(
        "fixes",
        ["fix", "pattern", "status", "risk", "accepts", "rejects", "outcomes", "recipe"],
        [
            [
                short(f["fix"]),
                short(f["pattern"]),
                f["status"],
                f["risk"],
                len(f["accepts"]),
                len(f["rejects"]),
                f"{f['successes']}/{f['attempts']}",
                recipe_summary(f["recipe"]),
            ]
            for f in rows
        ],
    )


@click.command()
@click.argument("id_prefix")
@json_option
@pass_ctx
@errors
def show(ctx: Ctx, id_prefix: str, as_json: bool) -> None:
    """Show one op, pattern, fix, goal or member by id (a unique hex prefix).

    Exit 3 if nothing (or more than one thing) has that prefix; 4 if ID_PREFIX is
    not 4 to 64 hex characters.
    """
    prefix = checked_prefix(id_prefix)
    with ctx.reader() as r:
        doc = r.show(prefix)
    if as_json:
        print_json(doc)
        return
    console.print(f"[bold]{esc(doc.pop('type'))}[/]")
    for key, value in sorted(jsonable(doc).items()):
        console.print(f"  [bold]{esc(key)}[/]: {esc(_shown(key, value))}")


def _shown(key: str, value: object) -> str:
    """A value of `show` as text: a string as it is, a recipe as the `fixes` table
    shows it (plus its other fields), anything else as compact JSON (``false``,
    ``null``, ``[["08ef…", 1]]``), never a Python repr."""
    if isinstance(value, str):
        return value
    if key == "recipe" and isinstance(value, dict) and isinstance(value.get("steps"), list):
        rest = {k: v for k, v in value.items() if k != "steps"}
        return recipe_summary(value) + (f"  {_json(rest)}" if rest else "")
    return _json(value)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


@click.command()
@click.option(
    "--limit",
    default=30,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Show at most this many.",
)
@click.option("--kind", type=click.Choice(KINDS), help="Only ops of this kind.")
@json_option
@pass_ctx
@errors
def log(ctx: Ctx, limit: int, kind: str | None, as_json: bool) -> None:
    """The most recent ops, newest first."""
    with ctx.reader() as r:
        rows = r.log(limit=limit, kind=kind)
    if as_json:
        print_json(rows)
        return
    table(
        "log",
        ["op", "kind", "author", "seq", "lamport", "time"],
        [
            [short(o["id"]), o["kind"], short(o["author"]), o["seq"], o["lamport"], _when(o["ts"])]
            for o in rows
        ],
    )


@click.command()
@json_option
@pass_ctx
@errors
def members(ctx: Ctx, as_json: bool) -> None:
    """Members, roles, verifier tiers and scopes, revocations.

    A revoked key holds no role: the table shows its roles as "-" and names
    the roles it was granted in the revoked column. `--json` keeps the
    materialised rows as they are (protocol.md §6.7): `roles` and `verifier`
    are what the key was granted, `revoked` says whether they still count.
    """
    with ctx.reader() as r:
        rows = r.members(with_ops=True)
    if as_json:
        print_json(rows)
        return
    table(
        "members",
        ["key", "name", "roles", "verifier (tier:scope)", "revoked", "flags", "ops"],
        [_member_row(m) for m in rows],
    )


def _member_row(m: dict[str, Any]) -> list[Any]:
    roles = ",".join(m["roles"])
    verifier = " ".join(f"{t}:{s}" for t, s in m["verifier"])
    revoked = m["revoked"]
    if revoked:
        held = " ".join(x for x in (roles, verifier) if x)
        revoked = f"{revoked}, was {held}" if held else revoked
        roles = verifier = "-"
    flags = "EQUIVOCATING" if m["equivocating"] else ""
    return [short(m["key"], 16), m["name"], roles, verifier, revoked or "-", flags, m["ops"]]


@click.command()
@click.option(
    "--limit",
    default=30,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Show at most this many.",
)
@json_option
@pass_ctx
@errors
def rejected(ctx: Ctx, limit: int, as_json: bool) -> None:
    """Ops this replica rejected, with the reason."""
    with ctx.reader() as r:
        rows = r.rejected(limit=limit)
    if as_json:
        print_json(rows)
        return
    table(
        "rejected",
        ["op", "reason", "detail"],
        [[short(x["id"]), x["code"], x["detail"]] for x in rows],
    )


__all__ = ["fixes", "log", "members", "patterns", "rejected", "show", "status"]
