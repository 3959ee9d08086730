"""docs/cli.md is generated from the CLI and can never go stale; every command and
option it documents has a help text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from gossipmind.cli import reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
HOW = f"regenerate it: {reference.REGENERATE}"


def tree() -> list[tuple[click.Command, click.Context]]:
    root = reference.root_context()
    return list(reference.commands(root.command, root))


def test_docs_cli_md_is_the_rendered_reference() -> None:
    assert DOC.exists(), f"docs/cli.md is missing; {HOW}"
    assert DOC.read_text() == reference.render(), f"docs/cli.md is stale; {HOW}"


def test_the_module_prints_the_reference() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gossipmind.cli.reference"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout == reference.render()


def test_every_command_and_subcommand_is_documented() -> None:
    text = reference.render()
    paths = [ctx.command_path for _, ctx in tree()]
    assert len(paths) == len(set(paths)) > 20
    for path in paths:
        assert f"\n## {path}\n" in text, path
    for expected in ("gossipmind node", "gossipmind testnet up", "gossipmind goals set"):
        assert expected in paths


def test_every_command_has_help() -> None:
    missing = [ctx.command_path for cmd, ctx in tree() if not reference.help_text(cmd)]
    assert not missing, f"commands without a help text (docstring): {missing}"


def test_every_option_has_help() -> None:
    without = sorted(
        f"{ctx.command_path} {opt.opts[0]}"
        for cmd, ctx in tree()
        for opt in reference.options(cmd, ctx)
        if not (opt.help or "").strip()
    )
    assert not without, f"options without help=: {without}; add help text, then {HOW}"


def test_rendering_of_types_defaults_and_env() -> None:
    text = reference.render()
    assert "gossipmind node [OPTIONS]" in text
    assert "| `--api-port` | integer 0\N{EN DASH}65535 | \N{EM DASH} |" in text  # from node.toml
    assert "| `--data-dir` | directory | \N{EM DASH}; env `GOSSIPMIND_HOME` |" in text
    assert "| `--role` | `member` \\| `teacher` \\| `verifier` \\| `admin` | required |" in text
    assert "| `--accept` / `--reject` | flag | required |" in text
    assert "| `--bootstrap` | text, repeatable |" in text
    assert "`-h` / `--help`" in text
    assert "Arguments: `KEY`." in text
