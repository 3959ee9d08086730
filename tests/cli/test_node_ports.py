"""`gossipmind node` refuses ports it could not have to itself, before it starts:
py-libp2p listens with SO_REUSEPORT, so a second node on a busy port used to start
without an error and share the first one's inbound connections."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import Dirs, net  # noqa: F401  (a shared fixture)


def gossipmind(*args: str) -> list[str]:
    return [sys.executable, "-c", "from gossipmind.cli.main import main; main()", *args]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GOSSIPMIND_DEBUG"}
    return subprocess.run(
        gossipmind(*args), capture_output=True, text=True, timeout=60, check=False, env=env
    )


def last_line(out: subprocess.CompletedProcess[str]) -> str:
    return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""


def test_a_listen_port_another_process_holds_is_refused(net: Dirs) -> None:  # noqa: F811
    with socket.socket() as busy:  # held the way py-libp2p holds it
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        addr = f"/ip4/127.0.0.1/tcp/{port}"
        out = run("--data-dir", str(net.root / "admin"), "node", "--no-api", "--listen", addr)
    assert out.returncode == 4, out.stderr
    line = last_line(out)
    assert line.startswith("error: cannot listen on " + addr) and "--listen" in line


def test_a_configured_listen_address_is_checked_too(net: Dirs) -> None:  # noqa: F811
    data = net.root / "admin"
    (data / "node.toml").write_text('listen = "/ip4/127.0.0.1/udp/4001"\n')
    out = run("--data-dir", str(data), "node", "--no-api")
    assert out.returncode == 4, out.stderr
    assert "listen in" in last_line(out) and "must have the form" in last_line(out)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--api-port", "24777"], "--api-port names one port"),
        (["--listen", "/ip4/127.0.0.1/tcp/24555"], "--listen with a fixed port"),
    ],
)
def test_options_for_one_node_are_refused_with_extra_data_dirs(
    net: Dirs,  # noqa: F811
    tmp_path: Path,
    flags: list[str],
    message: str,
) -> None:
    extra = net.root / "agent"
    out = run("--data-dir", str(net.root / "admin"), "node", *flags, "--extra-data-dir", str(extra))
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
