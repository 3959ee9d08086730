"""The CLI on hostile or mistaken input: data that looks like rich markup, unwritable
output paths, empty or missing passphrases, bad flags. Each is refused clearly (or
shown verbatim) before anything is written."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from test_cli import RECIPE, Dirs, copy_ops, key, net

from gossipmind.cli import output
from gossipmind.cli.common import errors
from gossipmind.cli.main import cli
from gossipmind.core import ops as opsmod
from gossipmind.store.keyfile import key_is_encrypted, read_key
from gossipmind.store.sqlite import Store

__all__ = ["net"]  # the fixture, shared with test_cli


@pytest.fixture
def wide() -> Iterator[None]:
    """A console wide enough that no table folds a cell (so text can be searched)."""
    saved = output.console._width
    output.console.width = 400
    yield
    output.console._width = saved


def inject_foreign_rejected_op(d: Dirs, author: str, into: str) -> None:
    """A peer (``author``) sends ``into`` an attestation whose scope and reason look like
    markup; ``into`` rejects it and records the detail."""
    ident = read_key(d.root / author / "identity.key")
    with Store.open(d.root / into / "kb.sqlite3") as s:
        r = s.replica
        heads = sorted(r.heads)
        op = opsmod.create(
            ident,
            net=r.net,
            kind="fix.attest",
            seq=1,
            lamport=1 + max(r.meta[h].lamport for h in heads),
            deps=heads,
            ts=int(time.time() * 1000),
            body={"fix": b"\1" * 32, "scope": "acme [prod]", "verdict": "reject", "reasons": []},
        )
        assert s.ingest_raw([op.raw]).rejected


@pytest.mark.usefixtures("wide")
def test_markup_in_data_is_shown_verbatim(net: Dirs) -> None:
    d = net
    made = d.run("solo", "init")
    made = d.run("solo", "network", "create", "--name", "net[/] [bold]x")
    assert "(net[/] [bold]x)" in made.output
    assert "(net[/] [bold]x)" in d.run("solo", "status").output
    reported = d.run(
        "solo", "report", "--service", "svc", "--operation", "op", "--message", "bad [/x] [bold]"
    )
    assert "bad [/x] [bold]" in reported.output
    assert "bad [/x] [bold]" in d.run("solo", "patterns").output

    d.run("admin", "grant", key(d, "agent"), "--role", "member", "--name", "acme [prod]")
    d.run("admin", "grant", key(d, "human"), "--role", "verifier", "--tier", "3", "--scope", "*")
    d.run("admin", "grant", key(d, "human"), "--role", "teacher", "--name", "[bold]h[/]")
    members = d.run("admin", "members").output
    assert "acme [prod]" in members and "[bold]h[/]" in members
    shown = d.run("admin", "show", key(d, "agent")[:16]).output
    assert "acme [prod]" in shown

    copy_ops(d, "admin", "human")
    pattern = d.json("human", "report", "--service", "payments", "--operation", "charge")["pattern"]
    recipe = {**RECIPE, "steps": [{"type": "idempotency_key", "header": "X-[b]"}]}
    fix = d.json(
        "human", "teach", "--pattern", pattern[:12], "--recipe", json.dumps(recipe),
        "--rationale", "[bold]why[/] acme [prod]",
    )["fix"]  # fmt: skip
    assert "header=X-[b]" in d.run("human", "fixes").output
    one = d.run("human", "review", fix[:12]).output
    assert "[bold]why[/] acme [prod]" in one and "header=X-[b]" in one

    goal = d.json(
        "human", "goals", "set", "--title", "t [prod]", "--scope", "payments",
        "--constraint", "retry.max_attempts<=2", "--description", "d[/]",
    )["goal"]  # fmt: skip
    assert "t [prod]" in d.run("human", "goals", "list").output
    shown_goal = d.run("human", "goals", "show", goal[:10]).output
    assert "t [prod]" in shown_goal and "d[/]" in shown_goal

    inject_foreign_rejected_op(d, "verifier", "admin")
    assert "'acme [prod]' is not a lowercase name" in d.run("admin", "rejected").output

    refused = d.run("human", "attest", fix, "--accept", "--scope", "acme [prod]", ok=False)
    assert refused.exit_code == 4 and "'acme [prod]'" in refused.output


def _must_not_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("the demo ran before its --report path was checked")


def test_output_paths_are_checked_before_any_work(net: Dirs, tmp_path: Path) -> None:
    d = net
    d.run("solo", "init")
    missing = tmp_path / "nonexistent" / "g.json"
    bad = d.run("solo", "network", "create", "--name", "n", "--out", str(missing), ok=False)
    assert bad.exit_code == 2 and str(missing) in bad.output and "--out" in bad.output
    assert not (tmp_path / "solo" / "kb.sqlite3").exists()
    into_dir = d.run("solo", "network", "create", "--name", "n", "--out", str(tmp_path), ok=False)
    assert into_dir.exit_code == 2 and "is a directory" in into_dir.output

    report = tmp_path / "nonexistent" / "r.html"
    with pytest.MonkeyPatch.context() as mp:  # refused up front, not after the run
        mp.setattr("gossipmind.testnet.demo.run_demo", _must_not_run)
        demo = CliRunner().invoke(cli, ["demo", "--short", "--report", str(report)])
    assert demo.exit_code == 2 and str(report) in demo.output
    scenario = CliRunner().invoke(
        cli,
        ["testnet", "scenario", "x", "--report", str(report), "--run-dir", str(tmp_path / "tn")],
    )
    assert scenario.exit_code == 2 and str(report) in scenario.output


def test_an_os_error_names_the_file() -> None:
    @click.command()
    @errors
    def boom() -> None:
        raise FileNotFoundError(2, "No such file or directory", "/nowhere/f.json")

    result = CliRunner().invoke(boom)
    assert result.exit_code == 1
    assert result.output == "error: /nowhere/f.json: No such file or directory\n"


def test_an_empty_data_dir_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOSSIPMIND_HOME", str(tmp_path / "home"))
    for value in ("", " "):
        result = CliRunner().invoke(cli, ["--data-dir", value, "init"])
        assert result.exit_code == 2 and "--data-dir" in result.output
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("content", ["", "  \n\t\n"])
def test_init_refuses_an_empty_passphrase_file(tmp_path: Path, content: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text(content)
    data = tmp_path / "d"
    result = CliRunner().invoke(
        cli, ["--data-dir", str(data), "init", "--passphrase-file", str(secret)]
    )
    assert result.exit_code == 2 and "empty" in result.output and str(secret) in result.output
    assert not data.exists()


def test_an_encrypted_key_without_a_terminal_asks_for_passphrase_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOSSIPMIND_PASSPHRASE", raising=False)
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    d = Dirs(tmp_path)
    d.run("enc", "init", "--passphrase-file", str(secret))
    assert key_is_encrypted(tmp_path / "enc" / "identity.key")
    for args in (("whoami",), ("network", "create", "--name", "n")):
        result = d.run("enc", *args, ok=False)
        assert result.exit_code == 6, (args, result.output)
        assert "passphrase is required" in result.output and "--passphrase-file" in result.output
        assert "Aborted" not in result.output and "Warning" not in result.output
    assert not (tmp_path / "enc" / "kb.sqlite3").exists()
    with_file = ("--passphrase-file", str(secret))
    d.run("enc", "network", "create", "--name", "n", *with_file)
    me = d.json("enc", "whoami", *with_file)["key"]
    d.run("enc", "grant", "11" * 32, "--role", "member", *with_file)
    assert {m["key"] for m in d.json("enc", "members")} == {me, "11" * 32}

    def signing(command: click.Command, path: list[str]) -> Iterator[list[str]]:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from signing(sub, [*path, name])
        elif "--passphrase-file" in [o for p in command.params for o in p.opts]:
            yield path

    commands = {" ".join(p) for p in signing(cli, [])}
    assert commands >= {
        "whoami", "network create", "grant", "revoke", "propose", "attest", "outcome",
        "revoke-fix", "report", "goals set", "goals review", "review", "teach", "node", "init",
    }  # fmt: skip


@pytest.mark.parametrize(
    "addr",
    [
        "garbage",
        "/ip4/127.0.0.1/tcp/4001",
        "/ip4/999.0.0.1/tcp/4001/p2p/12D3KooWEoK6hEwwtGyC6jPCMoa4vYyKqyMuAXZs349dsFkn8Hnn",
        "/ip4/127.0.0.1/tcp/99999/p2p/12D3KooWEoK6hEwwtGyC6jPCMoa4vYyKqyMuAXZs349dsFkn8Hnn",
        "/ip4/127.0.0.1/udp/4001/p2p/12D3KooWEoK6hEwwtGyC6jPCMoa4vYyKqyMuAXZs349dsFkn8Hnn",
        "/ip4/127.0.0.1/tcp/4001/p2p/notapeer",
    ],
)
def test_a_bad_bootstrap_address_is_a_usage_error(tmp_path: Path, addr: str) -> None:
    result = CliRunner().invoke(
        cli, ["--data-dir", str(tmp_path), "node", "--no-api", "--bootstrap", addr]
    )
    assert result.exit_code == 2, result.output
    assert "--bootstrap" in result.output and addr in result.output


@pytest.mark.parametrize("addr", ["garbage", "/ip4/127.0.0.1/udp/1", "/ip4/1.2.3.4/tcp/70000"])
def test_a_bad_listen_address_is_a_usage_error_too(tmp_path: Path, addr: str) -> None:
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "node", "--listen", addr])
    assert result.exit_code == 2, result.output
    assert "--listen" in result.output and addr in result.output


def gossipmind(*args: str) -> list[str]:
    return [sys.executable, "-c", "from gossipmind.cli.main import main; main()", *args]


def test_the_node_names_a_busy_api_port_and_a_bad_configured_bootstrap(net: Dirs) -> None:
    data = str(net.root / "admin")
    env = {k: v for k, v in os.environ.items() if k != "GOSSIPMIND_DEBUG"}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            gossipmind("--data-dir", data, "node", "--api-port", str(port)),
            capture_output=True, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip
    assert out.returncode == 4, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"127.0.0.1:{port}" in last and "--api-port" in last
    assert "internal error" not in out.stderr

    (net.root / "admin" / "node.toml").write_text('bootstrap = ["/ip4/127.0.0.1/tcp/1"]\n')
    out = subprocess.run(
        gossipmind("--data-dir", data, "node", "--no-api"),
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert out.returncode == 4, out.stderr
    assert "'/ip4/127.0.0.1/tcp/1'" in out.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "content", [b"[1, 2]", b'"strict"', b"null", b"7", b'{"open_membership": true}\xff']
)
def test_a_policy_that_is_not_a_json_object_is_bad_input(tmp_path: Path, content: bytes) -> None:
    d = Dirs(tmp_path)
    d.run("a", "init")
    policy = tmp_path / "policy.json"
    policy.write_bytes(content)
    result = d.run("a", "network", "create", "--name", "n", "--policy", str(policy), ok=False)
    assert result.exit_code == 4, result.output
    assert str(policy) in result.output and "Traceback" not in result.output
    assert not (tmp_path / "a" / "kb.sqlite3").exists()


def test_a_recipe_file_that_is_not_utf8_is_bad_input(net: Dirs, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.json"
    recipe.write_bytes(json.dumps(RECIPE).encode() + b"\xff\xfe")
    for command in ("propose", "teach"):
        result = net.run(
            "admin", command, "--pattern", "00" * 32, "--recipe", str(recipe),
            "--rationale", "r", ok=False,
        )  # fmt: skip
        assert result.exit_code == 4, result.output
        assert "not UTF-8" in result.output and str(recipe) in result.output


def test_reviewing_ones_own_goal_is_refused_before_writing(net: Dirs) -> None:
    d = net
    goal = d.json(
        "admin", "goals", "set", "--title", "t", "--scope", "payments",
        "--constraint", "retry.max_attempts<=2",
    )["goal"]  # fmt: skip
    before = d.json("admin", "status")
    result = d.run("admin", "goals", "review", goal[:12], "--approve", ok=False)
    assert result.exit_code == 4 and "you own this goal" in result.output
    assert d.json("admin", "status") == before


def test_reviewing_ones_own_goal_through_a_running_node_is_refused(net: Dirs) -> None:
    d = net
    goal = d.json("admin", "goals", "set", "--title", "t", "--scope", "payments")["goal"]
    cmd = gossipmind("--data-dir", str(d.root / "admin"), "node", "--api-port", "0")
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline())["event"] == "ready"
            ops = d.json("admin", "status")["ops"]
            result = d.run("admin", "goals", "review", goal[:12], "--approve", ok=False)
            assert result.exit_code == 4 and "you own this goal" in result.output
            assert d.json("admin", "status")["ops"] == ops
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_review_verdict_and_comment_need_their_counterparts(net: Dirs) -> None:
    d = net
    before = d.json("human", "status")
    no_fix = d.run("human", "review", "--accept", ok=False)
    assert no_fix.exit_code == 2 and "needs the FIX" in no_fix.output
    no_verdict = d.run("human", "review", "00" * 32, "--comment", "looks fine", ok=False)
    assert no_verdict.exit_code == 2 and "--comment" in no_verdict.output
    assert d.json("human", "status") == before


def test_small_input_mistakes_are_clear(net: Dirs, tmp_path: Path) -> None:
    d = net
    genesis = tmp_path / "no-op.json"
    genesis.write_text(json.dumps({"gossipmind_genesis": 1, "network": "00"}))
    joined = d.run("solo", "network", "join", str(genesis), ok=False)
    assert joined.exit_code == 4 and 'no "op"' in joined.output

    op = d.json("admin", "log")[0]["id"]
    wrong = d.run("admin", "attest", op[:12], "--accept", ok=False)
    assert wrong.exit_code == 3 and "is an op, not a fix" in wrong.output

    kind = d.run("admin", "log", "--kind", "bogus", ok=False)
    assert kind.exit_code == 2 and "fix.attest" in kind.output and "net.genesis" in kind.output
    assert d.json("admin", "log", "--kind", "net.genesis")[0]["kind"] == "net.genesis"

    for status in ("blocked", "unproposed"):  # every status a fix can have filters
        assert d.json("admin", "fixes", "--status", status) == []

    teach = d.run(
        "admin", "teach", "--pattern", "00" * 32, "--recipe", json.dumps(RECIPE),
        "--rationale", " ", ok=False,
    )  # fmt: skip
    assert teach.exit_code == 2 and "--rationale" in teach.output


def test_the_demo_summary_shows_scenario_text_verbatim() -> None:
    import io

    from rich.console import Console

    from gossipmind.testnet.demo import show_summary

    buf = io.StringIO()
    agent = {"agent": "a[/]", "late": False, "node": "n [x]", "calls": 1, "failed": 0}
    s = {
        "scenario": "[bold]s[/] [/]",
        "agents": [{**agent, "before": None, "after": None, "recoveries": 0}],
        "first": dict.fromkeys(("threshold", "proposed", "accepted", "recovery")),
        "expect": "none",
        "accepted_fixes": [],
        "poison_fix": "ab" * 32,
        "poison_status": "blocked [by goal]",
        "converged": True,
    }
    show_summary(Console(file=buf, width=200), s, None)  # type: ignore[arg-type]
    text = buf.getvalue()
    for shown in ("[bold]s[/] [/]: summary", "a[/]", "n [x]", "blocked [by goal]"):
        assert shown in text, (shown, text)
