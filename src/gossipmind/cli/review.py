"""`gossipmind review` and `gossipmind teach`: people in the loop."""

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
from gossipmind.cli.inspect import recipe_summary
from gossipmind.cli.output import console, esc, print_json, short
from gossipmind.cli.write import _done, _write, parse_recipe
from gossipmind.core.errors import NotFound
from gossipmind.core.policy import scope_covers
from gossipmind.core.recipe import RISKS
from gossipmind.core.schema import fix_id


def waiting_for(me: bytes, fixes: list[dict[str, Any]], members: list[dict[str, Any]]) -> list[Any]:
    """Fixes in my tier-3 scopes that need a person and that I have not judged."""
    mine = next((m for m in members if m["key"] == me), None)
    scopes = [s for t, s in (mine or {}).get("verifier", []) if t >= 3]
    out = []
    for f in fixes:
        if f["status"] not in ("proposed", "rejected"):
            continue
        if (f.get("quorum") or {}).get("tier", 0) < 3:
            continue
        if not any(scope_covers(s, f["scope"]) for s in scopes):
            continue
        if any(a["verifier"] == me for a in f["attestations"]):
            continue
        out.append(f)
    return out


def show_fix(f: dict[str, Any]) -> None:
    console.print(
        f"[bold]fix {f['fix'].hex()}[/]  "
        + esc(f"scope {f['scope']}  risk {f['risk']}  status {f['status']}")
    )
    console.print(f"  recipe     {esc(recipe_summary(f['recipe']))}")
    console.print(f"  rationale  {esc(f['rationale'] or '-')}")
    if f.get("drill"):
        d = f["drill"]
        ok, base = d["success_bp"] / 100, d["baseline_success_bp"] / 100
        console.print(
            f"  drill      success {ok:.1f}% vs {base:.1f}% baseline, "
            f"amplification {d['amplification_pm'] / 1000:.2f}x, runs {d['runs']}"
        )
    console.print(
        f"  fleet      {f['successes']}/{f['attempts']} successes from "
        f"{f['outcome_reporters']} agents"
    )
    for a in f["attestations"]:
        console.print(
            esc(
                f"  verdict    {a['verdict']} by {short(a['verifier'])} (tier {a['tier']}): "
                f"{'; '.join(a['reasons'])}"
            )
        )
    for g, why in f.get("violations", []):
        console.print(f"  [red]goal {short(g)}: {esc(why)}[/]")


@click.command()
@click.argument("fix", required=False)
@click.option("--accept/--reject", "accept", default=None, help="Sign your verdict on FIX.")
@click.option(
    "--comment",
    default="",
    callback=max_length(256),
    help="Why (recorded in the attestation; at most 256 characters; needs --accept/--reject).",
)
@passphrase_option
@json_option
@pass_ctx
@errors
def review(ctx: Ctx, fix: str | None, accept: bool | None, comment: str, as_json: bool) -> None:
    """List fixes waiting for a person in your scopes, show one, or sign a verdict.

    `gossipmind review` lists; `gossipmind review FIX` shows it (recipe,
    rationale, drill, fleet evidence); `gossipmind review FIX --accept|--reject
    --comment TEXT` signs a tier-3 attestation.
    """
    if fix is None and accept is not None:
        raise click.UsageError("--accept/--reject needs the FIX to sign a verdict on")
    if comment and accept is None:
        raise click.UsageError("--comment goes with a verdict: add --accept or --reject")
    me = ctx.identity().public
    with ctx.reader() as r:
        fixes, members = r.fixes(), r.members()
    if fix is None:
        todo = waiting_for(me, fixes, members)
        if as_json:
            print_json(todo)
            return
        if not todo:
            console.print("nothing is waiting for you")
        for f in todo:
            show_fix(f)
            console.print()
        return
    fid = resolve_prefix(ctx, fix, "fix")
    row = next((f for f in fixes if f["fix"] == fid), None)
    if row is None:
        raise NotFound(f"no fix {fix}")
    if accept is None:
        if as_json:
            print_json(row)
        else:
            show_fix(row)
        return
    verdict = "accept" if accept else "reject"
    body = {
        "fix": fid,
        "scope": row["scope"],
        "verdict": verdict,
        "reasons": [comment] if comment else [],
        "evidence": {"reviewer": "person"},
    }
    _done(_write(ctx, "fix.attest", body), f"{verdict}ed fix {short(fid)}", as_json)


def _not_blank(value: str, option: str) -> str:
    if not value.strip():
        raise click.BadParameter("must not be empty", param_hint=f"'{option}'")
    return value


@click.command()
@click.option("--pattern", required=True, help="Pattern id (or a unique prefix).")
@click.option("--recipe", "recipe_src", required=True, help="Recipe as JSON or a JSON file.")
@click.option(
    "--rationale",
    required=True,
    callback=lambda _c, _p, v: _not_blank(v, "--rationale"),
    help="The lesson in words (shown to reviewers and agents).",
)
@click.option(
    "--risk",
    type=click.Choice(RISKS),
    default="low",
    show_default=True,
    help="Your claim; the policy's floor may raise it.",
)
@passphrase_option
@json_option
@pass_ctx
@errors
def teach(
    ctx: Ctx, pattern: str, recipe_src: str, rationale: str, risk: str, as_json: bool
) -> None:
    """Teach the network a fix you wrote; it goes through the same verification.

    Requires the teacher role; you are recorded as its author.
    """
    recipe = parse_recipe(recipe_src)
    pid = resolve_prefix(ctx, pattern, "pattern")
    body = {
        "pattern": pid,
        "recipe": recipe,
        "risk": risk,
        "rationale": rationale,
        "origin": "human",
    }
    fid = fix_id(pid, recipe)
    _done(_write(ctx, "fix.propose", body), f"taught fix {fid.hex()}", as_json, fix=fid)


__all__ = ["review", "teach"]
