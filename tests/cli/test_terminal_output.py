"""Text any member can sign (a pattern template, a member name, a rationale, an
attestation comment, a goal title, a network name) is free text: a control character
in it must not reach the operator's terminal. Every view shows it made visible
(``\\x1b``, ``\\u202e``), in plain output and in rich's terminal output; ``--json``
keeps it exact (JSON escapes it). Real data dirs, real SQLite stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import RECIPE, Dirs, copy_ops, key, net

from gossipmind.cli import output
from gossipmind.cli.common import Ctx, now_ms
from gossipmind.core.schema import pattern_id
from gossipmind.learn.batcher import ReportBatcher
from gossipmind.learn.patterns import Failure, reduce

__all__ = ["net"]  # the fixture, shared with test_cli

HOSTILE = "ok\x1b[2J\x1b]0;pwn\x07\x1b[8mHID\x1b[0m\x9b1m\u202eevil\u2066x\u2069\r\nforged: ok"
"""Clear the screen, retitle the window, conceal text, a C1 CSI, bidi overrides and
isolates, and a forged second line."""

ACTIVE = ("\x1b[2J", "\x1b]0;", "\x1b[8m", "\x07", "\x9b", "\u202e", "\u2066", "\u2069")
"""What must never reach the terminal (rich's own styling uses other sequences)."""


@pytest.fixture
def wide() -> Iterator[None]:
    """A console wide enough that no table folds a cell (so text can be searched)."""
    saved = output.console._width
    output.console.width = 1000
    yield
    output.console._width = saved


def signed_hostile_report(d: Dirs, who: str) -> str:
    """What a hostile member's own software can sign: a pattern.report whose template
    holds terminal sequences (the op schema allows any text of up to 1024 characters)."""
    ctx = Ctx(str(d.root / who))
    batcher, t = ReportBatcher(), now_ms()
    batcher.add(
        reduce(Failure("payments", "charge", "TimeoutError", "x", None, None, None, None)), t
    )
    (body,) = batcher.flush(t)
    body["template"] = HOSTILE
    body["pattern"] = pattern_id(body["service"], body["operation"], body["error_class"], HOSTILE)
    with ctx.store() as store:
        store.create_op(ctx.identity(), "pattern.report", body, t)
    return str(body["pattern"].hex())


def hostile_network(d: Dirs) -> dict[str, str]:
    """Every free-text field a view shows, signed with HOSTILE text; the ids to show."""
    d.run("solo", "init")
    created = d.run("solo", "network", "create", "--name", HOSTILE)
    assert_inert(created.output)
    d.run("admin", "grant", key(d, "agent"), "--role", "member", "--name", HOSTILE)
    d.run("admin", "grant", key(d, "human"), "--role", "verifier", "--tier", "3", "--scope", "*")
    d.run("admin", "grant", key(d, "human"), "--role", "teacher", "--name", HOSTILE)
    copy_ops(d, "admin", "human")
    pattern = signed_hostile_report(d, "human")
    fix = d.json(
        "human", "teach", "--pattern", pattern[:12], "--recipe", json.dumps(RECIPE),
        "--rationale", HOSTILE,
    )["fix"]  # fmt: skip
    d.run("human", "review", fix, "--reject", "--comment", HOSTILE)
    goal = d.json(
        "human", "goals", "set", "--title", HOSTILE, "--scope", "payments",
        "--constraint", "retry.max_attempts<=2", "--description", HOSTILE,
    )["goal"]  # fmt: skip
    return {"pattern": pattern, "fix": fix, "goal": goal, "member": key(d, "agent")}


def views(ids: dict[str, str]) -> list[tuple[str, list[str]]]:
    return [
        ("solo", ["status"]),
        ("human", ["patterns"]),
        ("human", ["show", ids["pattern"][:12]]),
        ("human", ["members"]),
        ("human", ["show", ids["member"][:16]]),
        ("human", ["fixes"]),
        ("human", ["review", ids["fix"][:12]]),
        ("human", ["goals", "list"]),
        ("human", ["goals", "show", ids["goal"][:12]]),
        ("human", ["log"]),
    ]


def assert_inert(text: str) -> None:
    for seq in ACTIVE:
        assert seq not in text, (seq, text)


@pytest.mark.usefixtures("wide")
def test_control_characters_in_signed_text_never_reach_the_terminal(net: Dirs) -> None:
    d = net
    ids = hostile_network(d)
    for who, args in views(ids):
        out = d.run(who, *args).output
        assert "\x1b" not in out and "\r" not in out, (args, out)  # plain: no escape at all
        assert_inert(out)
    shown = d.run("human", "show", ids["pattern"][:12]).output
    assert "ok\\x1b[2J\\x1b]0;pwn\\x07\\x1b[8mHID\\x1b[0m\\x9b1m" in shown  # visible, inert
    assert "\\u202eevil\\u2066x\\u2069\\r\\nforged: ok" in shown  # on one line
    assert "\nforged" not in shown
    assert "\\x9b1m" in d.run("human", "patterns").output
    assert "\\x1b[2J" in d.run("human", "review", ids["fix"][:12]).output  # rationale, comment
    assert "\\u202eevil" in d.run("solo", "status").output

    # --json stays exact: the same text, escaped by JSON
    doc = d.json("human", "show", ids["pattern"][:12])
    assert doc["template"] == HOSTILE
    assert [g["title"] for g in d.json("human", "goals", "list")] == [HOSTILE]


def test_rich_terminal_output_neutralises_them_too(net: Dirs) -> None:
    """The same views with rich writing to a terminal (FORCE_COLOR): its own styles
    are there, the member's sequences are not."""
    ids = hostile_network(net)
    code = "import sys; from gossipmind.cli.main import main; sys.argv[0] = 'gossipmind'; main()"
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "1000"}
    env.pop("NO_COLOR", None)
    for who, args in views(ids):
        out = subprocess.run(
            [sys.executable, "-c", code, "--data-dir", str(net.root / who), *args],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0, (args, out.stderr)
        assert "\x1b[" in out.stdout, args  # rich did write to a terminal: styles
        assert_inert(out.stdout)
        assert "\r" not in out.stdout


def test_an_error_line_shows_control_characters_visibly(net: Dirs, tmp_path: Path) -> None:
    """`error: …` lines can quote text from elsewhere (a file name, a node's refusal)."""
    name = str(tmp_path / "r\x1b]0;pwned\x07.json")
    out = net.run("human", "propose", "--pattern", "abcd", "--recipe", name, ok=False)
    assert out.exit_code == 4
    assert "r\\x1b]0;pwned\\x07.json" in out.output
    assert_inert(out.output)


def test_visible_keeps_ordinary_text_and_escapes_every_control() -> None:
    assert output.visible("café 中文 [bold] tab\there") == "café 中文 [bold] tab\\there"
    assert output.visible("a\tb\nc", lines=True) == "a\tb\nc"
    for code in [*range(0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]:
        for lines in (False, True):
            assert output.visible(chr(code), lines=lines) in (
                f"\\x{code:02x}",
                "\\r",
            ), code
    for code in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]:
        assert output.visible(chr(code)) == f"\\u{code:04x}"
    assert output.esc("\x1b[bold]x") == "\\x1b\\[bold]x"
