"""The `gossipmind` command."""

from __future__ import annotations

import os
import sys

import click

from gossipmind.cli import (
    bench,
    demo,
    doctor,
    goals,
    inspect,
    node,
    review,
    testnet,
    token,
    write,
)
from gossipmind.cli.common import Ctx, require_utf8
from gossipmind.cli.output import visible
from gossipmind.node.build import version_line


def _non_empty(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty (omit it for the default)")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--data-dir",
    envvar="GOSSIPMIND_HOME",
    type=click.Path(file_okay=False),
    callback=_non_empty,
    help="Data directory (default: $GOSSIPMIND_HOME or ~/.gossipmind).",
)
@click.version_option(version_line(), prog_name="gossipmind")
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None) -> None:
    """gossipmind: a peer-to-peer learning network for AI agents.

    A node runs beside each agent; failures become privacy-preserving patterns,
    the network learns verified fixes, and every agent applies them.
    """
    ctx.obj = Ctx(data_dir)


for command in (
    write.init,
    write.whoami,
    write.network,
    inspect.status,
    inspect.patterns,
    inspect.fixes,
    inspect.show,
    inspect.log,
    inspect.members,
    inspect.rejected,
    doctor.doctor,
    write.report,
    write.grant,
    write.revoke,
    write.propose,
    write.attest,
    write.outcome,
    write.revoke_fix,
    goals.goals,
    review.review,
    review.teach,
    bench.bench,
    demo.demo,
    node.node,
    testnet.testnet,
    token.token,
):
    cli.add_command(command)
    if command not in (bench.bench, demo.demo, node.node, testnet.testnet):  # they reach no store
        require_utf8(command, except_params=frozenset({"recipe_src"}))  # JSON or a file name


def described(exc: BaseException, most: int = 3) -> str:
    """``Type: message``; for an exception group (what escapes a trio nursery), also
    its first ``most`` leaf exceptions, which say what went wrong (the group does not)."""
    text = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, BaseExceptionGroup):
        return text
    leaves: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(leaves) < most:
        e = todo.pop(0)
        if isinstance(e, BaseExceptionGroup):
            todo[:0] = list(e.exceptions)
        else:
            leaves.append(e)
    return f"{text}: " + "; ".join(f"{type(e).__name__}: {e}" for e in leaves)


def main() -> None:
    """Entry point. An unexpected exception is a bug: one line, exit 70, traceback on demand."""
    try:
        cli(prog_name="gossipmind", standalone_mode=True)
    except Exception as exc:
        if os.environ.get("GOSSIPMIND_DEBUG"):
            raise
        click.echo(
            f"internal error (a bug in gossipmind): {visible(described(exc), lines=True)}\n"
            "rerun with GOSSIPMIND_DEBUG=1 for the traceback",
            err=True,
        )
        sys.exit(70)
