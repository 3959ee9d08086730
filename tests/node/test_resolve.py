"""Bootstrap addresses by DNS name (node.resolve, docs/operations.md §3).

A node joining a network on other machines is usually given its bootstrap peer
by name. Real nodes over libp2p on 127.0.0.1 join through ``/dns4/localhost/…``
(resolved by the system from its hosts file, no DNS server needed); a resolver
injected into :class:`~gossipmind.node.peering.Peering` drives the failures.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from gossipmind.cli.main import cli
from gossipmind.core.errors import ConfigError, NetworkError
from gossipmind.node import addrbook, resolve
from gossipmind.node.config import NodeConfig, load_config
from gossipmind.node.node import Node, open_node
from gossipmind.testing import sample_report
from gossipmind.testnet.setup import prepare

PEER = "12D3KooWEoK6hEwwtGyC6jPCMoa4vYyKqyMuAXZs349dsFkn8Hnn"


def named(addr: str, proto: str = "dns4", name: str = "localhost") -> str:
    """``/ip4/127.0.0.1/tcp/P/p2p/ID`` as ``/<proto>/<name>/tcp/P/p2p/ID``."""
    parts = addr.split("/")
    assert parts[1:3] == ["ip4", "127.0.0.1"], addr
    return "/".join(["", proto, name, *parts[3:]])


async def two_nodes(
    stack: AsyncExitStack,
    root: Path,
    boot: Callable[[str], tuple[str, ...]],
    resolver: resolve.Resolver | None = None,
) -> tuple[Node, Node]:
    """A listening node, and a second whose only way to it is ``boot(its address)``."""
    specs = prepare(root, 2, 0)
    first = await stack.enter_async_context(
        open_node(NodeConfig(data_dir=specs[0].dir, synchronous="NORMAL", learn=False))
    )
    cfg = NodeConfig(
        data_dir=specs[1].dir,
        synchronous="NORMAL",
        learn=False,
        bootstrap=boot(first.transport.addrs()[0]),
    )
    second = await stack.enter_async_context(open_node(cfg))
    second.peering.resolver = resolver
    return first, second


async def connected(a: Node, b: Node, timeout: float) -> None:
    with trio.fail_after(timeout):
        while b.transport.peer_id not in a.transport.peers():
            await trio.sleep(0.05)


@pytest.mark.parametrize("proto", ["dns4", "dns"])
async def test_a_node_joins_through_a_bootstrap_address_given_by_name(
    tmp_path: Path, proto: str
) -> None:
    """/dns4/localhost and /dns/localhost (which may resolve to ::1 first, where
    nothing listens: the next address is tried) reach the peer, and an op written
    there is applied here."""
    async with AsyncExitStack() as stack:
        first, second = await two_nodes(stack, tmp_path, lambda a: (named(a, proto),))
        await connected(second, first, 30)
        op = await first.write("pattern.report", sample_report(template="by name <*>"))
        with trio.fail_after(30):
            while op.id not in second.store.replica.meta:
                await trio.sleep(0.05)


async def test_each_dial_resolves_again_and_tries_every_address_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name first resolves to a dead address (127.0.0.2 on the same port: the
    dial is refused) and then also to the live one: the second dial resolves
    again, skips the dead address and connects. The resolver saw the name, its
    port, IPv4 and stream sockets each time."""
    monkeypatch.setattr(addrbook, "BOOTSTRAP_BACKOFF_CAP", 0.5)
    calls: list[tuple[Any, ...]] = []
    port: list[int] = []

    async def resolver(*args: Any) -> list[Any]:
        calls.append(args)
        dead = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port[0]))
        live = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port[0]))
        return [dead] if len(calls) == 1 else [dead, dead, live]

    def boot(addr: str) -> tuple[str, ...]:
        port.append(int(addr.split("/")[4]))
        return (named(addr, "dns4", "boot.gossipmind.test"),)

    async with AsyncExitStack() as stack:
        first, second = await two_nodes(stack, tmp_path, boot, resolver)
        await connected(second, first, 30)
    assert len(calls) >= 2
    assert {c for c in calls} == {
        ("boot.gossipmind.test", port[0], socket.AF_INET, socket.SOCK_STREAM)
    }


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "cannot resolve"),
        (ValueError("a resolver's own bug"), "a resolver's own bug"),
    ],
    ids=["unknown-name", "resolver-bug"],
)
async def test_a_name_that_does_not_resolve_backs_off_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: Exception, said: str
) -> None:
    """An unknown name is a failed dial like any other: logged with the resolver's
    reason, backed off (never forgotten: it is a bootstrap address), no crash; so
    is anything else a resolver raises."""
    calls = 0

    async def resolver(*_args: Any) -> list[Any]:
        nonlocal calls
        calls += 1
        raise error

    caplog.set_level(logging.INFO, logger="gossipmind.node")
    async with AsyncExitStack() as stack:
        _, second = await two_nodes(
            stack, tmp_path, lambda a: (named(a, "dns4", "nowhere.invalid"),), resolver
        )
        with trio.fail_after(30):
            while calls < 2:
                await trio.sleep(0.05)
        assert second.transport.peers() == []
        addr = second.config.bootstrap[0]
        assert not second.addrbook.ready(addr, trio.current_time())  # backing off
    messages = [r.getMessage() for r in caplog.records if "nowhere.invalid" in r.getMessage()]
    assert messages and said in messages[0], messages


async def test_resolve_keeps_the_family_asked_for_without_duplicates_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tail = f"/tcp/4001/p2p/{PEER}"

    async def many(*_args: Any) -> list[Any]:
        v4 = [(socket.AF_INET, 1, 6, "", (f"10.0.0.{i}", 4001)) for i in (1, 1, 2, 3, 4, 5)]
        v6 = [(socket.AF_INET6, 1, 6, "", ("fe80::1%eth0", 4001, 0, 2))]
        unix = [(socket.AF_UNIX, 1, 0, "", "/tmp/x")]
        return unix + v6 + v4

    got = await resolve.resolve("/dns/boot.example.org" + tail, many)
    assert got == [
        "/ip6/fe80::1" + tail,  # the zone is dropped: a multiaddr has none
        "/ip4/10.0.0.1" + tail,
        "/ip4/10.0.0.2" + tail,
        "/ip4/10.0.0.3" + tail,
    ]
    assert len(got) == resolve.MAX_RESOLVED

    async def v6_first(*_args: Any) -> list[Any]:
        v6 = [(socket.AF_INET6, 1, 6, "", (f"2001:db8::{i}", 4001, 0, 0)) for i in range(1, 6)]
        v4 = [(socket.AF_INET, 1, 6, "", (f"10.0.0.{i}", 4001)) for i in (1, 2)]
        return v6 + v4

    # a host without IPv6 routes still gets IPv4 addresses to try: the families alternate
    assert await resolve.resolve("/dns/boot.example.org" + tail, v6_first) == [
        "/ip6/2001:db8::1" + tail,
        "/ip4/10.0.0.1" + tail,
        "/ip6/2001:db8::2" + tail,
        "/ip4/10.0.0.2" + tail,
    ]
    assert await resolve.resolve("/ip4/10.0.0.9" + tail) == ["/ip4/10.0.0.9" + tail]

    async def nothing(*_args: Any) -> list[Any]:
        return [(socket.AF_UNIX, 1, 0, "", "/tmp/x")]

    with pytest.raises(NetworkError, match="resolves to no IPv6 address"):
        await resolve.resolve("/dns6/boot.example.org" + tail, nothing)

    async def hangs(*_args: Any) -> list[Any]:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    monkeypatch.setattr(resolve, "RESOLVE_TIMEOUT", 0.1)
    with pytest.raises(NetworkError, match=r"resolving 'boot\.example\.org' timed out"):
        await resolve.resolve("/dns4/boot.example.org" + tail, hangs)


@pytest.mark.parametrize(
    ("addr", "why"),
    [
        (f"/dns4/localhost/tcp/4001/p2p/{PEER}", None),
        (f"/dns6/boot.example.org./tcp/4001/p2p/{PEER}", None),
        (f"/dns/b-1.example.org/tcp/4001/p2p/{PEER}", None),
        (f"/dns4/10.0.0.1/tcp/4001/p2p/{PEER}", "is an IP address: write /ip4/10.0.0.1/"),
        (f"/dns4/-bad/tcp/4001/p2p/{PEER}", "hyphen"),
        (f"/dns4/a..b/tcp/4001/p2p/{PEER}", "Empty Label"),
        (f"/dns4/{'a' * 64}.org/tcp/4001/p2p/{PEER}", "Label too long"),
        (f"/dns4/host/udp/4001/p2p/{PEER}", "must have the form"),
        (f"/dnsaddr/host/tcp/4001/p2p/{PEER}", "must have the form"),
        ("/dns4/host/tcp/4001", "must have the form"),
        (f"/dns4/host/tcp/4001/p2p/{PEER}/", f"write it as '/dns4/host/tcp/4001/p2p/{PEER}'"),
        (f"//dns4/host/tcp/4001/p2p/{PEER}", "write it as"),
        (f"/dns4/host/tcp/04001/p2p/{PEER}", "write it as '/dns4/host/tcp/4001/"),
        (f"/ip4/10.0.0.1/tcp/4001/p2p/{PEER}/", "write it as"),
        (f"/dns4/127.1/tcp/4001/p2p/{PEER}", "written like an IP address"),
        (f"/dns4/0x7f.1/tcp/4001/p2p/{PEER}", "written like an IP address"),
    ],
)
def test_which_names_a_bootstrap_address_may_take(addr: str, why: str | None) -> None:
    problem = resolve.bootstrap_problem(addr)
    if why is None:
        assert problem is None
    else:
        assert problem is not None and why in problem, problem


@pytest.mark.parametrize(
    "addr", [f"/dns4/-bad/tcp/1/p2p/{PEER}", "/dnsaddr/x.test", f"/dns4/x/udp/1/p2p/{PEER}"]
)
def test_a_bad_named_bootstrap_address_is_a_usage_error(tmp_path: Path, addr: str) -> None:
    result = CliRunner().invoke(
        cli, ["--data-dir", str(tmp_path), "node", "--no-api", "--bootstrap", addr]
    )
    assert result.exit_code == 2, result.output
    assert "--bootstrap" in result.output and addr in result.output
    assert not any(tmp_path.iterdir())  # nothing created


def test_a_bad_bootstrap_address_is_a_config_error_for_the_library_and_the_file(
    tmp_path: Path,
) -> None:
    """``open_node`` callers and ``node.toml`` get the check the CLI flag gets; the
    fake network's ``/memory/`` addresses stay allowed."""
    bad = f"/dns4/host/tcp/4001/p2p/{PEER}/"
    with pytest.raises(ConfigError, match=r"bootstrap: .*write it as"):
        NodeConfig(data_dir=tmp_path).with_overrides(bootstrap=(bad,))
    (tmp_path / "node.toml").write_text(f'bootstrap = ["{bad}"]\n')
    with pytest.raises(ConfigError, match=r"node\.toml: bootstrap: .*write it as"):
        load_config(tmp_path)
    good = (f"/dns/boot.example.org/tcp/4001/p2p/{PEER}", "/memory/a/p2p/a")
    assert NodeConfig(data_dir=tmp_path).with_overrides(bootstrap=good).bootstrap == good
