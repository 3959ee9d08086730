"""Arguments whose bytes are not UTF-8 (Python hands them over with lone surrogates,
which no op, query or SQLite URI can encode): a usage error naming the parameter,
exit 2, nothing written; never "internal error" (exit 70). Real processes with
byte arguments, real SQLite stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_cli import RECIPE, Dirs, key, net

__all__ = ["net"]  # the fixture, shared with test_cli

MAIN = b"from gossipmind.cli.main import main; main()"


def run(*args: bytes | str | Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "GOSSIPMIND_DEBUG"}
    argv = [os.fsencode(a) for a in args]
    return subprocess.run(
        [os.fsencode(sys.executable), b"-c", MAIN, *argv],
        capture_output=True, timeout=60, check=False, env=env,
    )  # fmt: skip


def last_line(out: subprocess.CompletedProcess[bytes]) -> str:
    return out.stderr.decode("utf-8", "replace").strip().splitlines()[-1]


def ops(d: Path) -> int:
    out = run("--data-dir", d, "status", "--json")
    assert out.returncode == 0, out.stderr
    return int(json.loads(out.stdout)["ops"])


def test_a_service_that_is_not_utf8_or_not_a_name_is_a_usage_error(net: Dirs) -> None:
    d = net.root / "admin"
    out = run("--data-dir", d, "patterns", "--service", b"\xff\xfe")
    assert out.returncode == 2, out.stderr
    assert last_line(out) == r"Error: Invalid value for '--service': '\xff\xfe' is not UTF-8 text"
    out = run("--data-dir", d, "patterns", "--service", "Payments")
    assert out.returncode == 2, out.stderr
    assert "'Payments' is not a service name: lowercase [a-z0-9][a-z0-9._/-]*" in last_line(out)
    assert run("--data-dir", d, "patterns", "--service", "payments").returncode == 0


def test_text_that_is_not_utf8_is_refused_before_anything_is_written(net: Dirs) -> None:
    d = net.root / "admin"
    before = ops(d)
    agent = key(net, "agent")
    for option, args in [
        ("--name", ["grant", agent, "--role", "member", "--name", b"acme\xff"]),
        ("--title", ["goals", "set", "--title", b"\xff", "--scope", "payments"]),
        ("--service", ["report", "--service", b"pay\xe9", "--operation", "charge"]),
        ("--reason", ["revoke", agent, "--reason", b"\xc3"]),
    ]:
        out = run("--data-dir", d, *args)
        assert out.returncode == 2, (args, out.stderr)
        assert f"Invalid value for '{option}'" in last_line(out), args
        assert "is not UTF-8 text" in last_line(out), args
    assert ops(d) == before


def test_a_recipe_file_whose_name_is_not_utf8_is_still_read(net: Dirs, tmp_path: Path) -> None:
    """--recipe takes JSON or a file name, and a file name may be any bytes."""
    d = net.root / "admin"
    pattern = json.loads(
        run("--data-dir", d, "report", "--service", "payments", "--operation", "x", "--json").stdout
    )["pattern"]
    recipe = os.fsencode(tmp_path) + b"/recipe\xff.json"
    Path(os.fsdecode(recipe)).write_text(json.dumps(RECIPE))
    out = run("--data-dir", d, "propose", "--pattern", pattern, "--recipe", recipe)
    assert out.returncode == 0, out.stderr


def test_doctor_on_a_path_that_is_not_utf8_is_a_usage_error(net: Dirs, tmp_path: Path) -> None:
    odd = os.fsencode(tmp_path) + b"/data\xff"
    os.rename(net.root / "admin", odd)  # a data dir created elsewhere, then renamed
    for args in (["--data-dir", odd, "doctor"], ["--data-dir", odd, "doctor", "--json"]):
        out = run(*args)
        assert out.returncode == 2, out.stderr
        assert last_line(out) == (
            f"Error: Invalid value for '--data-dir': '{tmp_path}/data\\xff' is not a UTF-8 "
            "path: doctor cannot check it (rename it)"
        )
    out = run("doctor", odd)
    assert out.returncode == 2, out.stderr
    assert last_line(out).startswith("Error: Invalid value for 'PATH':")
