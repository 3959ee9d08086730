"""`gossipmind node` on addresses and ports it cannot have: one line naming them and
exit 4 (bad settings), never "internal error" (exit 70) or an error without a reason.
Real node processes on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from test_cli import Dirs, net  # noqa: F401  (a shared fixture)

MAIN = "from gossipmind.cli.main import main; main()"


def run(*args: str, code: str = MAIN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GOSSIPMIND_DEBUG"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip


def last_line(out: subprocess.CompletedProcess[str]) -> str:
    return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_an_api_port_that_is_the_listen_port_is_refused(net: Dirs, host: str) -> None:  # noqa: F811
    port = free_port()
    listen = f"/ip4/{host}/tcp/{port}"
    out = run(
        "--data-dir", str(net.root / "admin"), "node", "--listen", listen, "--api-port", str(port)
    )  # fmt: skip
    assert out.returncode == 4, out.stderr
    line = last_line(out)
    assert line == (
        f"error: the API port {port} (--api-port) is the TCP port of the listen address "
        f"{listen}: give the API another port, or 0 for any free one"
    )
    assert out.stdout == ""  # refused before anything started


def test_the_same_port_in_node_toml_is_refused_too(net: Dirs) -> None:  # noqa: F811
    port = free_port()
    data = net.root / "admin"
    (data / "node.toml").write_text(f'listen = "/ip4/127.0.0.1/tcp/{port}"\napi_port = {port}\n')
    out = run("--data-dir", str(data), "node")
    assert out.returncode == 4, out.stderr
    assert f"the API port {port} (api_port in node.toml)" in last_line(out)


def test_an_api_port_taken_after_the_check_is_refused_naming_it(net: Dirs) -> None:  # noqa: F811
    """The port is taken between the check and the bind (the check is skipped here;
    the gap also holds the whole store replay): exit 4 naming it, not exit 70."""
    skip_check = "import gossipmind.cli.node as n; n.check_port_free = lambda *a: None; " + MAIN
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run(
            "--data-dir", str(net.root / "admin"), "node", "--api-port", str(port), code=skip_check
        )  # fmt: skip
    assert out.returncode == 4, out.stderr
    assert last_line(out) == (
        f"error: cannot serve the API on 127.0.0.1:{port} (--api-port): Address already in use; "
        "another process (another node?) may listen there: choose another port, or 0 for any "
        "free one"
    )
    assert '"ready"' not in out.stdout


@pytest.mark.parametrize("port", [0, 4001])
def test_a_listen_address_of_another_machine_is_refused_with_its_reason(
    net: Dirs,  # noqa: F811
    port: int,
) -> None:
    listen = f"/ip4/192.0.2.1/tcp/{port}"  # TEST-NET-1: never an address of this machine
    out = run("--data-dir", str(net.root / "admin"), "node", "--no-api", "--listen", listen)
    assert out.returncode == 4, out.stderr
    assert last_line(out) == (
        f"error: cannot listen on {listen} (--listen): Cannot assign requested address: "
        "not an address of this machine"
    )


def test_the_main_data_dir_again_as_an_extra_data_dir_is_refused(net: Dirs) -> None:  # noqa: F811
    main = net.root / "admin"
    again = main / ".." / "admin"
    out = run("--data-dir", str(main), "node", "--no-api", "--extra-data-dir", str(again))
    assert out.returncode == 2, out.stderr
    assert f"--extra-data-dir: {main} is named twice (the main data dir counts)" in out.stderr
    assert out.stdout == ""  # no node started
