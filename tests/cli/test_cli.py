"""The CLI end to end on real data dirs: every kind written by hand, every view read."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gossipmind.cli.inspect import _member_row
from gossipmind.cli.main import cli

RECIPE = {
    "scope": "payments.charge",  # the pattern's service.operation
    "steps": [
        {"type": "idempotency_key", "header": "Idempotency-Key"},
        {
            "type": "retry",
            "max_attempts": 3,
            "base_ms": 200,
            "cap_ms": 2000,
            "jitter": "full",
            "on": ["timeout"],
        },
    ],
    "budget_ms": 10000,
}


class Dirs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.runner = CliRunner()

    def run(self, who: str, *args: str, ok: bool = True) -> Any:
        result = self.runner.invoke(cli, ["--data-dir", str(self.root / who), *args])
        if ok:
            assert result.exit_code == 0, (args, result.output, result.exception)
        return result

    def json(self, who: str, *args: str) -> Any:
        return json.loads(self.run(who, *args, "--json").stdout)


@pytest.fixture
def net(tmp_path: Path) -> Dirs:
    d = Dirs(tmp_path)
    for who in ("admin", "agent", "verifier", "human"):
        d.run(who, "init")
    d.run("admin", "network", "create", "--name", "cli-test", "--out", str(tmp_path / "g.json"))
    for who in ("agent", "verifier", "human"):
        d.run(who, "network", "join", str(tmp_path / "g.json"))
    return d


def key(d: Dirs, who: str) -> str:
    return str(d.json(who, "whoami")["key"])


def copy_ops(d: Dirs, src: str, dst: str) -> None:
    """Until the network lands, move ops between data dirs through the library."""
    from gossipmind.store.queries import Reader
    from gossipmind.store.sqlite import Store

    with Reader(d.root / src / "kb.sqlite3") as r:
        raws = [bytes(raw) for (raw,) in r.conn.execute("SELECT raw FROM ops ORDER BY ord")]
    with Store.open(d.root / dst / "kb.sqlite3") as s:
        s.ingest_raw(raws)


def test_a_walk_through_every_kind(net: Dirs) -> None:
    d = net
    d.run("admin", "grant", key(d, "agent"), "--role", "member", "--name", "agent")
    d.run(
        "admin",
        "grant",
        key(d, "verifier"),
        "--role",
        "verifier",
        "--tier",
        "2",
        "--scope",
        "payments",
    )
    d.run("admin", "grant", key(d, "human"), "--role", "verifier", "--tier", "3", "--scope", "*")
    d.run("admin", "grant", key(d, "human"), "--role", "teacher")
    for who in ("agent", "verifier", "human"):
        copy_ops(d, "admin", who)

    rep = d.json(
        "agent",
        "report",
        "--service",
        "payments",
        "--operation",
        "charge",
        "--type",
        "TimeoutError",
        "--message",
        "charge of 1234 EUR for jane@example.com timed out after 30000 ms",
        "--status",
        "504",
        "--latency-ms",
        "30000",
        "--count",
        "4",
    )
    assert "jane@example.com" not in json.dumps(rep)
    pattern = rep["pattern"]
    copy_ops(d, "agent", "human")
    prop = d.json(
        "human",
        "propose",
        "--pattern",
        pattern[:10],
        "--recipe",
        json.dumps(RECIPE),
        "--risk",
        "low",
        "--rationale",
        "retry with a key",
    )
    fix = prop["fix"]
    copy_ops(d, "human", "verifier")
    d.run("verifier", "attest", fix[:12], "--accept", "--reason", "drill ok")
    copy_ops(d, "verifier", "human")
    d.run("human", "attest", fix, "--accept")
    d.run("human", "outcome", fix[:12], "--attempts", "10", "--successes", "9")

    fixes = d.json("human", "fixes")
    assert [f["status"] for f in fixes] == ["accepted"]
    assert fixes[0]["risk"] == "medium"  # payments: the policy's floor, not the claimed "low"
    assert fixes[0]["successes"] == 9

    goal = d.json(
        "human",
        "goals",
        "set",
        "--title",
        "cap charge retries",
        "--scope",
        "payments",
        "--constraint",
        "retry.max_attempts<=2",
        "--constraint",
        "require_step=idempotency_key@retry",
    )["goal"]
    copy_ops(d, "human", "admin")
    d.run("admin", "goals", "review", goal[:12], "--approve", "--comment", "agreed")
    copy_ops(d, "admin", "human")
    goals = d.json("human", "goals", "list")
    assert goals[0]["active"] and goals[0]["constraints"][0]["value"] == 2
    assert d.json("human", "goals", "show", goal[:8])["title"] == "cap charge retries"

    d.run("human", "revoke-fix", fix, "--reason", "superseded")
    d.run("admin", "revoke", key(d, "agent"), "--reason", "left")
    assert d.json("human", "fixes", "--status", "revoked")[0]["fix"] == fix

    status = d.json("human", "status")
    assert status["ops"] >= 10 and len(status["root"]) == 64
    assert status["fixes"] == {"revoked": 1}
    assert d.json("human", "patterns")[0]["count"] == 4
    agent = next(m for m in d.json("admin", "members") if m["name"] == "agent")
    assert agent["revoked"] == "plain" and agent["roles"] == ["member"]  # §6.7: as granted
    row = _member_row(agent)
    assert row[2] == "-" and row[4] == "plain, was member"  # the table: a revoked key holds none
    kinds = {o["kind"] for o in d.json("human", "log", "--limit", "100")}
    assert {
        "pattern.report",
        "fix.propose",
        "fix.attest",
        "fix.outcome",
        "fix.revoke",
        "goal.set",
        "member.grant",
        "net.genesis",
    } <= kinds
    assert d.json("human", "show", fix[:10])["type"] == "fix"
    for view in ("status", "patterns", "fixes", "log", "members", "rejected"):
        assert d.run("human", view).output.strip()  # the tables render


def test_errors_are_one_line_with_specific_exit_codes(net: Dirs) -> None:
    d = net
    cases = [
        (("agent", "grant", "00" * 32, "--role", "admin"), 4, "admin role"),
        (("agent", "grant", "zz", "--role", "member"), 2, "KEY must be hex"),
        (("agent", "show", "abcdef"), 3, "nothing with id prefix"),
        (("agent", "show", "xyz"), 4, "not a hex id prefix"),  # bad input, not "not found"
        (("agent", "show", "zzzz"), 4, "'zzzz' is not a hex id prefix of 4 to 64 characters"),
        (("agent", "show", "ab" * 33), 4, "not a hex id prefix"),
        (("agent", "show", "ffffffffff"), 3, "nothing with id prefix"),
        (("nobody", "status"), 5, "no store"),
        (("nobody", "whoami"), 6, "no key file"),
        (("agent", "propose", "--pattern", "00" * 32, "--recipe", '{"scope": "x"}'), 4, "steps"),
        (
            ("agent", "goals", "set", "--title", "t", "--scope", "s", "--constraint", "nonsense"),
            2,
            "expected FIELD",
        ),
    ]
    for args, code, message in cases:
        result = d.run(args[0], *args[1:], ok=False)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_bad_input_changes_nothing(net: Dirs) -> None:
    d = net
    before = d.json("agent", "status")
    d.run("agent", "grant", "00" * 32, "--role", "admin", ok=False)
    d.run("agent", "attest", "00" * 32, "--accept", "--scope", "payments", ok=False)
    after = d.json("agent", "status")
    assert before == after


def test_second_init_refuses_to_overwrite_the_key(net: Dirs) -> None:
    before = key(net, "agent")
    result = net.run("agent", "init", ok=False)
    assert result.exit_code == 6 and "refusing to overwrite" in result.output
    assert key(net, "agent") == before


def test_the_installed_entry_point(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("gossipmind")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60, check=True)
    assert "peer-to-peer learning network" in out.stdout
    bad = subprocess.run(
        [exe, "--data-dir", str(tmp_path), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 5
    assert bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith("error: no store")


def test_every_command_has_help() -> None:
    runner = CliRunner()

    def walk(group: Any, path: list[str]) -> None:
        for name, command in group.commands.items():
            result = runner.invoke(cli, [*path, name, "--help"])
            assert result.exit_code == 0, name
            assert command.help, f"{' '.join([*path, name])} has no help text"
            if hasattr(command, "commands"):
                walk(command, [*path, name])

    walk(cli, [])


def test_the_owner_updates_or_retires_a_goal_naming_only_what_changes(net: Dirs) -> None:
    d = net
    d.run("admin", "grant", key(d, "human"), "--role", "verifier", "--tier", "3", "--scope", "*")
    copy_ops(d, "admin", "human")
    created = d.json(
        "human", "goals", "set", "--title", "cap charge retries", "--scope", "payments",
        "--constraint", "retry.max_attempts<=2", "--priority", "70", "--description", "finance",
    )  # fmt: skip
    goal = created["goal"]
    first = d.json("human", "goals", "show", goal[:8])

    d.run("human", "goals", "set", "--goal", goal[:12], "--priority", "80")
    second = d.json("human", "goals", "show", goal[:8])
    assert second["version"] != first["version"] and second["priority"] == 80
    for field in ("title", "scope", "constraints", "description"):
        assert second[field] == first[field], field
    assert not second["retired"]

    d.run("human", "goals", "set", "--goal", goal[:12], "--retire")
    third = d.json("human", "goals", "show", goal[:8])
    assert third["retired"] and third["priority"] == 80 and third["title"] == first["title"]
    assert third["constraints"] == first["constraints"]

    bad = d.run("human", "goals", "set", "--scope", "payments", ok=False)
    assert bad.exit_code == 2 and "a new goal needs --title and --scope" in bad.output
    missing = d.run("human", "goals", "set", "--goal", "ffffffff", "--retire", ok=False)
    assert missing.exit_code != 0 and "Traceback" not in missing.output
    assert [g["goal"] for g in d.json("human", "goals", "list")] == [goal]


def test_network_create_and_join_write_genesis_json_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash while genesis.json is written leaves the old file or the new one
    (store.datadir.write_atomic), as the node's own rewrite does."""
    import gossipmind.cli.write as write_cmds
    from gossipmind.store.datadir import write_atomic

    written: list[Path] = []

    def spy(path: Path, text: str, mode: int = 0o666) -> None:
        written.append(path)
        write_atomic(path, text, mode)

    monkeypatch.setattr(write_cmds, "write_atomic", spy)
    d = Dirs(tmp_path)
    d.run("admin", "init")
    d.run("agent", "init")
    d.run("admin", "network", "create", "--name", "atomic", "--out", str(tmp_path / "g.json"))
    d.run("agent", "network", "join", str(tmp_path / "g.json"))
    assert tmp_path / "admin" / "genesis.json" in written
    assert tmp_path / "agent" / "genesis.json" in written
    g = (tmp_path / "g.json").read_text()
    assert (tmp_path / "admin" / "genesis.json").read_text() == g
    assert (tmp_path / "agent" / "genesis.json").read_text() == g


def test_show_and_patterns_text_is_readable(net: Dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    """`show` printed nested values as Python reprs (`over_threshold: False`,
    `accepts: [['08ef…', 1]]`, `recipe: {'budget_ms': …}`); `patterns` marked
    reporters with a `*` nothing explained."""
    monkeypatch.delenv("COLUMNS", raising=False)  # into a pipe: lines are not wrapped
    d = net
    d.run("admin", "grant", key(d, "agent"), "--role", "member", "--name", "agent")
    d.run("admin", "grant", key(d, "human"), "--role", "verifier", "--tier", "3", "--scope", "*")
    d.run("admin", "grant", key(d, "human"), "--role", "teacher")
    copy_ops(d, "admin", "agent")
    report = ("report", "--service", "payments", "--operation", "charge", "--type", "TimeoutError")
    pattern = d.json("agent", *report)["pattern"]
    one = d.run("agent", "patterns").output
    assert "*" not in one, one  # one reporter: under the threshold, and no legend
    copy_ops(d, "agent", "admin")
    d.run("admin", *report)
    copy_ops(d, "admin", "human")
    fix = d.json("human", "propose", "--pattern", pattern[:10], "--recipe", json.dumps(RECIPE))[
        "fix"
    ]
    d.run("human", "attest", fix[:12], "--accept")

    shown_pattern = d.run("human", "show", pattern[:10]).output
    assert "over_threshold: true" in shown_pattern, shown_pattern
    shown = d.run("human", "show", fix[:10]).output
    assert "recipe: idempotency_key(header=Idempotency-Key) → retry(" in shown, shown
    assert 'on=["timeout"]' in shown and '{"budget_ms": 10000, "scope": "payments.charge"}' in shown
    assert re.search(r'accepts: \[\["[0-9a-f]{64}", 3\]\]', shown), shown
    for text in (shown, shown_pattern):
        assert not re.search(r"\['|\{'|: (True|False|None)$", text, re.M), text

    table = d.run("human", "patterns").output
    assert "2*" in table
    assert "* over the synthesis threshold: enough reporters to learn a fix" in table
    assert "synthesis threshold" in " ".join(d.run("human", "patterns", "--help").output.split())


def test_errors_under_json_are_plain_text_on_stderr_as_documented(net: Dirs) -> None:
    """With --json an error stays one text line on stderr and stdout is empty; the
    docs did not say so (scripts must read the exit code)."""
    from gossipmind.cli.reference import render

    shown = net.run("admin", "show", "ffffffff", "--json", ok=False)
    assert shown.exit_code == 3 and shown.stdout == ""
    assert shown.stderr == "error: nothing with id prefix ffffffff\n"
    again = net.run("admin", "init", "--json", ok=False)
    assert again.exit_code == 6 and again.stdout == "" and again.stderr.startswith("error: ")
    said = "Errors are plain text on stderr, `--json` or not: one line `error: …`"
    assert said in render()
    ops = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert "**Errors** of every command are plain text on stderr (`error: …`), with" in ops
