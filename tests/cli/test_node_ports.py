"""`gossipmind node` refuses ports it could not have to itself, before it starts:
py-libp2p listens with SO_REUSEPORT, so a second node on a busy port used to start
without an error and share the first one's inbound connections."""

from __future__ import annotations

import os
import signal
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("first", "second", "refused"),
    [
        ("/ip4/127.0.0.1/tcp/{p}", "/ip6/::ffff:127.0.0.1/tcp/{p}", True),
        ("/ip6/::ffff:127.0.0.1/tcp/{p}", "/ip4/127.0.0.1/tcp/{p}", True),
        ("/ip4/127.0.0.1/tcp/{p}", "/ip4/127.0.0.1/tcp/{q}", False),
        ("/ip4/127.0.0.1/tcp/0", "/ip6/::ffff:127.0.0.1/tcp/0", False),
    ],
)
def test_extra_data_dirs_on_one_port_under_two_spellings_are_refused(
    net: Dirs,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    first: str,
    second: str,
    refused: bool,
) -> None:
    import gossipmind.node.daemon as daemon

    started: list[list[str]] = []  # what the node would run: no node is started here
    monkeypatch.setattr(
        daemon, "run", lambda cfgs, **_: started.append([c.listen for _, c in cfgs])
    )
    monkeypatch.setattr(daemon, "configure_logging", lambda *_: None)
    p, q = free_port(), free_port()
    main, extra = net.root / "admin", net.root / "agent"
    (main / "node.toml").write_text(f'listen = "{first.format(p=p, q=q)}"\n')
    (extra / "node.toml").write_text(f'listen = "{second.format(p=p, q=q)}"\n')
    out = net.run("admin", "node", "--no-api", "--extra-data-dir", str(extra), ok=False)
    if refused:
        assert out.exit_code == 4, out.output
        assert f"would share TCP port {p}" in out.output and str(extra) in out.output
        assert started == []
    else:
        assert out.exit_code == 0, out.output
        assert len(started) == 1 and len(started[0]) == 2


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        (("127.0.0.1", 4001), ("::ffff:127.0.0.1", 4001), True),
        (("0.0.0.0", 4001), ("127.0.0.1", 4001), True),
        (("::", 4001), ("10.1.2.3", 4001), True),
        (("::", 4001), ("::1", 4001), True),
        (("::ffff:0.0.0.0", 4001), ("192.168.1.5", 4001), True),
        (("::1", 4001), ("::0:1", 4001), True),
        (("127.0.0.1", 4001), ("127.0.0.2", 4001), False),
        (("0.0.0.0", 4001), ("0.0.0.0", 4002), False),
        (("0.0.0.0", 0), ("0.0.0.0", 0), False),
        (("127.0.0.1", 0), ("::ffff:127.0.0.1", 0), False),
    ],
)
def test_listen_endpoints_overlap_by_port_and_normalized_host(
    a: tuple[str, int], b: tuple[str, int], overlap: bool
) -> None:
    from gossipmind.cli.node import listen_key, listens_overlap

    ka, kb = listen_key(*a), listen_key(*b)
    assert listens_overlap(ka, kb) is overlap and listens_overlap(kb, ka) is overlap


def test_the_api_logs_its_own_listening_line_and_not_hypercorns_banner(
    net: Dirs,  # noqa: F811
) -> None:
    """Every start logged hypercorn's "Running on http://127.0.0.1:PORT (CTRL + C to
    quit)", misleading in journald, before the node's own "API listening on …"."""
    env = {k: v for k, v in os.environ.items() if k != "GOSSIPMIND_DEBUG"}
    proc = subprocess.Popen(
        gossipmind("--data-dir", str(net.root / "admin"), "node"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # the "ready" line comes once the API listens
        assert '"ready"' in ready, ready
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "API listening on http://127.0.0.1:" in err, err
    assert "Running on" not in err and "CTRL + C" not in err, err
