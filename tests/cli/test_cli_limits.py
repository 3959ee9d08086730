"""The CLI at the edges of its input: constraints and numbers checked against the
schema's limits, ids that must name what they claim, revokes that would do nothing
or lock the network, damaged stores, and output that a pipe can grep."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_cli import RECIPE, Dirs, copy_ops, key, net

from gossipmind.cli.main import cli

__all__ = ["net"]  # the fixture, shared with test_cli


def _genesis(d: Dirs, who: str) -> str:
    return str(d.json(who, "log", "--kind", "net.genesis")[0]["id"])


def test_a_goal_constraint_is_checked_against_the_recipe_schema(net: Dirs) -> None:
    d = net
    before = d.json("admin", "status")
    bad = {
        "nosuch.field<=2": "no such field",
        "retry.nosuch<=2": "no such field",
        "budget<=2": "no such field",
        "retry.max_attempts<=99999999999999999999999": "between 2 and 10",
        "retry.max_attempts<=abc": "needs an integer",
        "retry.max_attempts=true": "expected an integer",
        "timeout.ms>=0": "between 1 and 300000",
        "retry.jitter=sometimes": "none, full, equal",
        "set_param.value=99999999999999999999999": "between",
    }
    for constraint, why in bad.items():
        result = d.run(
            "admin", "goals", "set", "--title", "t", "--scope", "payments",
            "--constraint", constraint, ok=False,
        )  # fmt: skip
        assert result.exit_code == 2, (constraint, result.output)
        assert "--constraint" in result.output and repr(constraint) in result.output
        assert why in result.output, (constraint, result.output)
    assert d.json("admin", "status") == before
    for good in ("retry.max_attempts<=3", "budget_ms<=5000", "retry.jitter=full"):
        d.run("admin", "goals", "set", "--title", "t", "--scope", "payments", "--constraint", good)


def test_a_full_id_is_checked_like_a_prefix(net: Dirs) -> None:
    d = net
    genesis = _genesis(d, "admin")
    before = d.json("admin", "status")
    wrong = d.run(
        "admin", "propose", "--pattern", genesis, "--recipe", json.dumps(RECIPE), ok=False
    )
    assert wrong.exit_code == 3 and "is an op, not a pattern" in wrong.output
    missing = d.run("admin", "outcome", "ab" * 32, "--attempts", "1", "--successes", "1", ok=False)
    assert missing.exit_code == 3 and f"no fix {'ab' * 32}" in missing.output
    # a malformed prefix is bad input (4) for `show` and for every command that
    # resolves one (cli.common.resolve_prefix), too long or not hex alike
    for command in (("outcome", "--attempts", "1", "--successes", "1"), ("show",)):
        for bad in (genesis + "00", "zzzz"):
            long = d.run("admin", command[0], bad, *command[1:], ok=False)
            assert long.exit_code == 4 and "4 to 64 characters" in long.output, long.output
    assert d.json("admin", "status") == before

    pattern = d.json("admin", "report", "--service", "payments", "--operation", "charge")["pattern"]
    fix = d.json("admin", "propose", "--pattern", pattern, "--recipe", json.dumps(RECIPE))["fix"]
    d.run("admin", "outcome", fix, "--attempts", "2", "--successes", "1")
    assert d.json("admin", "show", fix.upper())["successes"] == 1


def test_revoke_refuses_what_would_do_nothing_or_lock_the_network(net: Dirs) -> None:
    d = net
    admin, agent = key(d, "admin"), key(d, "agent")
    before = d.json("admin", "status")
    last = d.run("admin", "revoke", admin, ok=False)
    assert last.exit_code == 4 and "last admin" in last.output and "--force" in last.output
    stranger = d.run("admin", "revoke", agent, ok=False)
    assert stranger.exit_code == 3 and "not a member" in stranger.output
    assert d.json("admin", "status") == before

    d.run("admin", "grant", agent, "--role", "member")
    d.run("admin", "revoke", agent)
    again = d.run("admin", "revoke", agent, ok=False)
    assert again.exit_code == 4 and "already revoked" in again.output
    assert "--retroactive" in again.output
    d.run("admin", "revoke", agent, "--retroactive")  # a plain revoke made retroactive
    assert d.run("admin", "revoke", agent, "--retroactive", ok=False).exit_code == 4

    d.run("admin", "grant", key(d, "human"), "--role", "admin")
    d.run("admin", "revoke", admin)  # another admin remains
    d.run("solo", "init")
    d.run("solo", "network", "create", "--name", "n")
    d.run("solo", "revoke", key(d, "solo"), "--force")
    assert len(d.json("solo", "log", "--kind", "member.revoke")) == 1


def test_number_options_have_the_schema_limits(net: Dirs) -> None:
    d = net
    before = d.json("admin", "status")
    so = ("report", "--service", "s", "--operation", "o")
    cases = [
        (("outcome", "ab" * 32, "--attempts", str(2**64), "--successes", "1"), "1000000000"),
        (("outcome", "ab" * 32, "--attempts", "1", "--successes", str(2**64)), "1000000000"),
        ((*so, "--latency-ms", "1e30"), "--latency-ms"),
        ((*so, "--latency-ms", str(2**31)), "2147483647"),
        ((*so, "--retry-after-ms", str(2**40)), "2147483647"),
        (("review", "ab" * 32, "--accept", "--comment", "x" * 257), "256"),
        (("goals", "review", "ab" * 32, "--approve", "--comment", "x" * 1025), "1024"),
        (("bench", "learning", "--sizes", "100000"), "between 2 and 50"),
        (("bench", "learning", "--sizes", ",".join(["2"] * 9)), "at most 8"),
        (("node", "--no-api", "--status-every", "nan"), "not a finite number"),
        (("node", "--no-api", "--status-every", "inf"), "not a finite number"),
        (("testnet", "up", "--status-every", "nan"), "not a finite number"),
    ]  # fmt: skip
    for args, limit in cases:
        result = d.run("admin", *args, ok=False)
        assert result.exit_code == 2, (args, result.output)
        assert limit in result.output, (args, result.output)
    assert d.json("admin", "status") == before


def _damage(store: Path, sql: str) -> None:
    with sqlite3.connect(store) as conn:
        conn.execute(sql)
    conn.close()


def test_a_damaged_row_names_the_store_and_suggests_doctor(net: Dirs) -> None:
    d = net
    store = d.root / "admin" / "kb.sqlite3"
    d.run("admin", "grant", key(d, "agent"), "--role", "member")
    admin = key(d, "admin")
    _damage(store, f"UPDATE members SET doc = x'c1' WHERE key = x'{admin}'")
    latest = d.json("admin", "log", "--limit", "1")[0]["id"]
    _damage(store, f"UPDATE ops SET raw = x'9300' WHERE id = x'{latest}'")
    for args, table in (
        (("members",), "members"),
        (("show", admin[:12]), "members"),
        (("log",), "ops"),
        (("show", latest), "ops"),
        (("goals", "list"), None),
    ):
        result = d.run("admin", *args, ok=table is None)
        if table is None:
            continue
        assert result.exit_code == 5, (args, result.output)
        line = result.output.strip()
        assert str(store) in line and f"table {table}" in line and "gossipmind doctor" in line


def test_a_store_that_is_a_directory_is_named(tmp_path: Path) -> None:
    d = Dirs(tmp_path)
    d.run("a", "init")
    (tmp_path / "a" / "kb.sqlite3").mkdir()
    for args in (("status",), ("report", "--service", "s", "--operation", "o")):
        result = d.run("a", *args, ok=False)
        assert result.exit_code == 5, result.output
        assert f"{tmp_path / 'a' / 'kb.sqlite3'} is a directory" in result.output


def test_output_into_a_pipe_is_not_wrapped(net: Dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    d = net
    agent = key(d, "agent")
    d.run("admin", "grant", agent, "--role", "member", "--name", "a-rather-long-name " * 3)
    reported = d.run("admin", "report", "--service", "payments", "--operation", "charge")
    pattern = d.json("admin", "patterns")[0]["pattern"]
    assert f"reported pattern {pattern} (" in reported.output
    members = d.run("admin", "members").output
    assert any(
        agent[:16] in line and line.count("a-rather-long") == 3 for line in members.splitlines()
    )
    shown = d.run("admin", "show", agent[:12]).output
    assert f"key: {agent}\n" in shown
    copy_ops(d, "admin", "agent")
    status = CliRunner().invoke(cli, ["--data-dir", str(d.root / "agent"), "status"]).output
    network = d.json("agent", "status")["network"]
    assert f"network  {network}  (cli-test)" in status
