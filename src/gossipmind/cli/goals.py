"""`gossipmind goals`: owned, reviewed constraints over fixes."""

from __future__ import annotations

from typing import Any

import click

from gossipmind.cli.common import (
    Ctx,
    errors,
    json_option,
    max_length,
    pass_ctx,
    passphrase_option,
    resolve_prefix,
)
from gossipmind.cli.output import console, esc, jsonable, print_json, short, table
from gossipmind.cli.write import _done, _write
from gossipmind.core.checks import Checker, integer
from gossipmind.core.errors import InvalidOp, NotFound, SchemaError
from gossipmind.core.recipe import MAX_BUDGET_MS, STEP_FIELDS
from gossipmind.core.schema import check_constraint

FIELDS: dict[str, Checker] = {
    "budget_ms": integer(1, MAX_BUDGET_MS),
    **{
        f"{step}.{param}": check
        for step, (required, optional) in STEP_FIELDS.items()
        for param, check in {**required, **optional}.items()
    },
}
"""Every field a ``<=``, ``>=`` or ``=`` constraint can bound, with the check of its
values in a recipe (a bound a recipe could never hold is refused)."""


def _scalar(text: str) -> Any:
    if text.removeprefix("-").isdigit():
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    return text


def _check_bound(op: str, field: str, value: Any) -> None:
    """Refuse a bound on a field no recipe has, or a value the field cannot take."""
    check = FIELDS.get(field)
    if check is None:
        raise SchemaError(field, f"no such field; one of {', '.join(sorted(FIELDS))}")
    if op != "=" and (isinstance(value, bool) or not isinstance(value, int)):
        raise SchemaError(field, f"{op} needs an integer bound, got {value!r}")
    if field == "set_param.value":
        if isinstance(value, int) and not isinstance(value, bool):
            integer(-(2**63), 2**63 - 1)(value, field)
        return
    check(value, field)


def parse_constraint(text: str) -> dict[str, Any]:
    """``retry.max_attempts<=2``, ``require_step=idempotency_key[@retry]``,
    ``forbid_step=fallback``, ``allowed_fallbacks=a,b``: checked against the recipe
    schema (a usage error naming the constraint, before anything is written)."""
    for op in ("<=", ">=", "="):
        if op in text:
            left, right = text.split(op, 1)
            break
    else:
        raise click.BadParameter(
            f"{text!r}: expected FIELD<=VALUE, FIELD>=VALUE or FIELD=VALUE",
            param_hint="'--constraint'",
        )
    left, right = left.strip(), right.strip()
    if left == "require_step":
        step, _, when = right.partition("@")
        doc: dict[str, Any] = {"op": "require_step", "step": step}
        if when:
            doc["when"] = when
    elif left == "forbid_step":
        doc = {"op": "forbid_step", "step": right}
    elif left == "allowed_fallbacks":
        doc = {"op": "allowed_fallbacks", "targets": sorted({t for t in right.split(",") if t})}
    else:
        doc = {"op": op, "field": left, "value": _scalar(right)}
    try:
        checked = check_constraint(doc, "constraint")
        if "field" in checked:
            _check_bound(op, checked["field"], checked["value"])
    except SchemaError as exc:
        raise click.BadParameter(f"{text!r}: {exc}", param_hint="'--constraint'") from None
    return checked


def constraint_text(c: dict[str, Any]) -> str:
    if c["op"] in ("<=", ">=", "="):
        return f"{c['field']}{c['op']}{c['value']}"
    if c["op"] == "require_step":
        return f"require {c['step']}" + (f" when {c['when']}" if "when" in c else "")
    if c["op"] == "forbid_step":
        return f"forbid {c['step']}"
    return f"fallbacks ⊆ {{{','.join(c['targets'])}}}"


@click.group()
def goals() -> None:
    """Goals: constraints every fix in a scope must satisfy."""


@goals.command("list")
@json_option
@pass_ctx
@errors
def goals_list(ctx: Ctx, as_json: bool) -> None:
    """All goals, their current version and whether they are active."""
    with ctx.reader() as r:
        rows = r.goals()
    if as_json:
        print_json(rows)
        return
    table(
        "goals",
        ["goal", "title", "scope", "priority", "active", "owner", "constraints"],
        [
            [
                short(g["goal"]),
                g["title"],
                g["scope"],
                g["priority"],
                "yes" if g["active"] else ("retired" if g["retired"] else "no"),
                short(g["owner"]),
                "; ".join(constraint_text(c) for c in g["constraints"]),
            ]
            for g in rows
        ],
    )


@goals.command("show")
@click.argument("goal")
@json_option
@pass_ctx
@errors
def goals_show(ctx: Ctx, goal: str, as_json: bool) -> None:
    """Show one goal."""
    gid = resolve_prefix(ctx, goal, "goal")
    with ctx.reader() as r:
        rows = [g for g in r.goals() if g["goal"] == gid]
    if not rows:
        raise NotFound(f"no goal {goal}")
    if as_json:
        print_json(rows[0])
        return
    for key, value in sorted(jsonable(rows[0]).items()):
        console.print(f"  [bold]{esc(key)}[/]: {esc(value)}")


@goals.command("set")
@click.option(
    "--goal",
    "goal",
    help="Update this goal (you must own it); options not given keep the current "
    "version's values. Omit to create a goal.",
)
@click.option("--title", help="A short name for the goal (required for a new goal).")
@click.option("--scope", help="Scope the goal constrains, e.g. payments (required for a new goal).")
@click.option(
    "--constraint",
    "constraints",
    multiple=True,
    help="retry.max_attempts<=2 | require_step=idempotency_key@retry | "
    "forbid_step=fallback | allowed_fallbacks=a,b (repeatable; given at all, they "
    "replace the current ones)",
)
@click.option(
    "--priority",
    type=click.IntRange(0, 1000),
    default=None,
    help="Higher wins a conflict with another goal  [default for a new goal: 100]",
)
@click.option("--description", default=None, help="Longer text shown with the goal.")
@click.option("--retire", is_flag=True, help="Retire the goal (it stops constraining).")
@passphrase_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
@errors
def goals_set(
    ctx: Ctx,
    goal: str | None,
    title: str | None,
    scope: str | None,
    constraints: tuple[str, ...],
    priority: int | None,
    description: str | None,
    retire: bool,
    as_json: bool,
) -> None:
    """Create or update a goal; it is active once someone else approves it."""
    parsed = [parse_constraint(c) for c in constraints]
    current: dict[str, Any] = {"constraints": [], "priority": 100, "description": ""}
    gid = None
    if goal:
        gid = resolve_prefix(ctx, goal, "goal")
        with ctx.reader() as r:
            rows = [g for g in r.goals() if g["goal"] == gid]
        if not rows:
            raise NotFound(f"no goal {goal}")
        current = rows[0]
    elif title is None or scope is None:
        raise click.UsageError("a new goal needs --title and --scope")
    body: dict[str, Any] = {
        "title": title if title is not None else current["title"],
        "scope": scope if scope is not None else current["scope"],
        "constraints": parsed if constraints else list(current["constraints"]),
        "priority": priority if priority is not None else current["priority"],
        "retired": retire,
    }
    text = description if description is not None else current["description"]
    if text:
        body["description"] = text
    if gid is not None:
        body["goal"] = gid
    op_id = _write(ctx, "goal.set", body)
    gid = body.get("goal", op_id)
    _done(op_id, f"goal {short(gid)} set (needs a review to be active)", as_json, goal=gid)


@goals.command("review")
@click.argument("goal")
@click.option(
    "--approve/--reject", "approve", required=True, help="Your verdict on the current version."
)
@click.option(
    "--comment",
    default="",
    callback=max_length(1024),
    help="Why (recorded in the review; at most 1024 characters).",
)
@passphrase_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
@errors
def goals_review(ctx: Ctx, goal: str, approve: bool, comment: str, as_json: bool) -> None:
    """Approve or reject the current version of a goal (not your own)."""
    gid = resolve_prefix(ctx, goal, "goal")
    with ctx.reader() as r:
        rows = [g for g in r.goals() if g["goal"] == gid]
    if not rows:
        raise NotFound(f"no goal {goal}")
    owner = bytes(rows[0]["owner"])

    def not_mine(me: bytes) -> None:
        if me == owner:
            raise InvalidOp(
                "own_goal", "you own this goal: someone else must review it (nothing written)"
            )

    verdict = "approve" if approve else "reject"
    body = {"goal": gid, "version": rows[0]["version"], "verdict": verdict, "comment": comment}
    op_id = _write(ctx, "goal.review", body, check=not_mine)
    _done(op_id, f"{verdict}d goal {short(gid)}", as_json)


@goals.command("conflicts")
@json_option
@pass_ctx
@errors
def goals_conflicts(ctx: Ctx, as_json: bool) -> None:
    """Conflicts between active goals and how they are resolved (same on every replica)."""
    from gossipmind.core.goals import Goal, resolve

    with ctx.reader() as r:
        rows = [g for g in r.goals() if g["active"]]
    active = [
        Goal(g["goal"], g["scope"], g["priority"], tuple(g["constraints"]), g["title"])
        for g in rows
    ]
    titles = {g["goal"]: g["title"] for g in rows}
    conflicts = resolve(active).conflicts
    out = [
        {
            "a": c.a,
            "b": c.b,
            "scope": c.scope,
            "reason": c.reason,
            "winner": c.winner,
            "resolution": "higher priority wins"
            if c.winner
            else "equal priority: a tier-3 person decides",
        }
        for c in conflicts
    ]
    if as_json:
        print_json(out)
        return
    if not out:
        console.print("no conflicts between active goals")
    table(
        "goal conflicts",
        ["scope", "goals", "reason", "resolution"],
        [
            [
                c["scope"],
                f"{titles[c['a']]} vs {titles[c['b']]}",
                c["reason"],
                f"{titles[c['winner']]} wins" if c["winner"] else "tier 3 decides",
            ]
            for c in out
        ],
    )
