"""The CLI reference (``docs/cli.md``), rendered from the click command tree.

``render()`` walks every group and command of :data:`gossipmind.cli.main.cli`,
depth first in name order, and renders Markdown: the usage line, the help text
and a table of the options. ``tests/cli/test_reference.py`` checks that
``docs/cli.md`` is exactly this output. Regenerate it with::

    .venv/bin/python -m gossipmind.cli.reference > docs/cli.md
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator

import click

REGENERATE = ".venv/bin/python -m gossipmind.cli.reference > docs/cli.md"

# What a parameter without a default holds (None in older click, a sentinel in newer).
_NO_DEFAULT: object = click.Option(["--unset"]).default
_TAG = re.compile(r"<(?=[A-Za-z/!])")


def commands(
    command: click.Command, ctx: click.Context
) -> Iterator[tuple[click.Command, click.Context]]:
    """``command`` and every visible subcommand below it, depth first, by name."""
    yield command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from commands(sub, click.Context(sub, info_name=name, parent=ctx))


def root_context() -> click.Context:
    from gossipmind.cli.main import cli

    return click.Context(cli, info_name="gossipmind", **cli.context_settings)


def options(command: click.Command, ctx: click.Context) -> list[click.Option]:
    """The documented options: visible ones, without the help option."""
    help_names = set(ctx.help_option_names)
    return [
        p
        for p in command.params
        if isinstance(p, click.Option) and not p.hidden and not help_names & set(p.opts)
    ]


def help_text(command: click.Command) -> str:
    """The command's help as Markdown paragraphs (click's ``\\f`` and ``\\b`` honoured)."""
    text = inspect.cleandoc(command.help or "").split("\f", 1)[0]
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b").strip()


def _cell(text: str) -> str:
    return _TAG.sub("&lt;", " ".join(text.split())).replace("|", "\\|")


def _range(t: click.IntRange | click.FloatRange) -> str:
    base = "integer" if isinstance(t, click.IntRange) else "number"
    lo = "" if t.min is None else f"{t.min:g}"
    hi = "" if t.max is None else f"{t.max:g}"
    if lo and hi:
        return f"{base} {lo}\N{EN DASH}{hi}"
    return f"{base} ≥ {lo}" if lo else f"{base} ≤ {hi}"


def type_of(opt: click.Option) -> str:
    t = opt.type
    if opt.is_flag:
        kind = "flag"
    elif isinstance(t, click.Choice):
        kind = " \\| ".join(f"`{c}`" for c in t.choices)
    elif isinstance(t, click.IntRange | click.FloatRange):
        kind = _range(t)
    elif isinstance(t, click.Path):
        kind = "directory" if not t.file_okay else "file" if not t.dir_okay else "path"
    else:
        kind = {"integer": "integer", "float": "number"}.get(t.name, "text")
    return f"{kind}, repeatable" if opt.multiple else kind


def default_of(opt: click.Option, ctx: click.Context) -> str:
    value = opt.get_default(ctx, call=False)
    if opt.required:
        shown = "required"
    elif callable(value):
        shown = "computed"
    elif opt.is_flag and not opt.secondary_opts:
        # None: "not given", so a config file decides
        shown = "on" if value is True else "off" if value is False else "—"
    elif opt.is_flag:  # --yes/--no: the default names one side, or neither
        shown = (
            f"`{opt.opts[0]}`"
            if value is True
            else f"`{opt.secondary_opts[0]}`"
            if value is False
            else "—"
        )
    elif value in (None, _NO_DEFAULT, "", ()):
        shown = "—"
    else:
        shown = f"`{value}`"
    envvars = [opt.envvar] if isinstance(opt.envvar, str) else list(opt.envvar or ())
    return "; ".join([shown, *(f"env `{e}`" for e in envvars)])


def _names(opt: click.Option) -> str:
    names = ", ".join(f"`{n}`" for n in opt.opts)
    if opt.secondary_opts:
        names += " / " + " ".join(f"`{n}`" for n in opt.secondary_opts)
    return names


def _metavar(arg: click.Argument) -> str:
    name = (arg.metavar or arg.name or "").upper() + ("..." if arg.nargs != 1 else "")
    return name if arg.required else f"[{name}]"


def render_command(command: click.Command, ctx: click.Context) -> str:
    usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
    out = [f"## {ctx.command_path}", "", "```", usage, "```", ""]
    text = help_text(command)
    if text:
        out += [text, ""]
    args = [p for p in command.params if isinstance(p, click.Argument)]
    if args:
        listed = ", ".join(f"`{_metavar(a)}`" for a in args)
        out += [f"Arguments: {listed}.", ""]
    if isinstance(command, click.Group):
        subs = ", ".join(f"`{name}`" for name in command.list_commands(ctx))
        out += [f"Subcommands: {subs}.", ""]
    opts = options(command, ctx)
    if opts:
        out += ["| option | type | default | description |", "|---|---|---|---|"]
        out += [
            f"| {_names(o)} | {type_of(o)} | {default_of(o, ctx)} | {_cell(o.help or '—')} |"
            for o in opts
        ]
        out.append("")
    return "\n".join(out)


def _anchor(path: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", path.lower()).replace(" ", "-")


def render() -> str:
    """The whole reference, as ``docs/cli.md`` holds it."""
    root = root_context()
    tree = list(commands(root.command, root))
    helps = " / ".join(f"`{n}`" for n in root.help_option_names)
    out = [
        "# CLI reference",
        "",
        "<!-- Generated from the click command tree by gossipmind.cli.reference; do not edit.",
        f"     Regenerate: {REGENERATE}",
        "     tests/cli/test_reference.py fails when this file is stale. -->",
        "",
        f"Every command of `gossipmind`, generated from the CLI itself. Every command "
        f"also takes {helps}. Global options (`--data-dir`) go before the command: "
        "`gossipmind --data-dir DIR status`.",
        "",
        "Errors are plain text on stderr, `--json` or not: one line `error: …` "
        "(a usage error, exit 2: click's `Usage: …` and `Error: …` lines), and no JSON "
        "on stdout. `--json` changes only what a command prints on stdout; a command "
        "whose check fails (`doctor`, `testnet scenario`, `chaos`, `attack`) still "
        "prints its result there, as JSON with `--json`, before it exits non-zero. "
        "Scripts tell failures apart by the exit code: 1 a gossipmind error or a failed "
        "check, 2 usage, 3 not found, 4 invalid input or configuration, 5 store, "
        "6 identity, 70 a bug, 128 + N a `testnet up`/`start`/`restart` interrupted by "
        "signal N (see [operations.md](operations.md#4-gossipmind-node), *Exit status*).",
        "",
    ]
    for command, ctx in tree:
        summary = _cell(command.get_short_help_str(limit=100))
        out.append(f"- [`{ctx.command_path}`](#{_anchor(ctx.command_path)}) — {summary}")
    out.append("")
    out += [render_command(command, ctx) for command, ctx in tree]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    click.echo(render(), nl=False)
