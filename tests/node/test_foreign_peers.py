"""A peer of another network is found, said and kept off; a bootstrap address
that fails is said (node.foreign, node.peering; docs/operations.md §12).

Before: a node given another network's genesis (or a bootstrap address of
another network's node) stayed connected for good, counted in ``peers``,
declining a sync session every round, with nothing logged above debug; and a
bootstrap address that could not be dialled was logged at debug only.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from gossipmind.node import foreign, peering
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.testnet.setup import prepare

BOUND = 60
PEER = "12D3KooWEoK6hEwwtGyC6jPCMoa4vYyKqyMuAXZs349dsFkn8Hnn"


def config(data_dir: Path, bootstrap: tuple[str, ...] = ()) -> NodeConfig:
    return NodeConfig(
        data_dir=data_dir,
        synchronous="NORMAL",
        learn=False,
        bootstrap=bootstrap,
        sync_interval=1.0,
        explore_interval=1.0,
    )


async def until(what: str, check: Callable[[], bool], timeout: float = BOUND) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.05)
    assert check(), what


def warnings_about(caplog: pytest.LogCaptureFixture, peer: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and peer in r.getMessage()
    ]


async def test_a_peer_of_another_network_is_said_dropped_and_kept_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gossipmind.node")
    ours = prepare(tmp_path / "ours", 2, 0)
    theirs = prepare(tmp_path / "theirs", 1, 0)
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_node(config(ours[0].dir)))
        boot = (a.transport.addrs()[0],)
        x = await stack.enter_async_context(open_node(config(theirs[0].dir, boot)))
        # both ends find it, say it (naming the other) and drop the connection
        await until("both warned", lambda: a.foreign.found == 1 and x.foreign.found == 1)
        await until("dropped", lambda: not a.transport.peers() and not x.transport.peers())
        assert len(warnings_about(caplog, x.transport.peer_id)) == 1
        assert len(warnings_about(caplog, a.transport.peer_id)) == 1
        assert "another network" in warnings_about(caplog, a.transport.peer_id)[0]
        assert a.status()["foreign_peers"] == 1 == x.status()["foreign_peers"]
        # kept off: x's bootstrap address is its only one, yet it is not dialled again
        declined = a.sync.declined_by_reason.get("wrong network", 0)
        await trio.sleep(3)  # several maintain and exploration rounds
        assert not a.transport.peers() and not x.transport.peers()
        assert a.sync.declined_by_reason.get("wrong network", 0) == declined
        assert a.foreign.found == 1 == x.foreign.found
        # a node of the right network still joins
        b = await stack.enter_async_context(open_node(config(ours[1].dir, boot)))
        await until("joined", lambda: b.transport.peer_id in a.transport.peers())
        assert b.foreign.found == 0 and a.foreign.found == 1


async def test_the_hold_runs_out_and_is_said_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(foreign, "HOLD", 1.0)
    caplog.set_level(logging.INFO, logger="gossipmind.node")
    ours = prepare(tmp_path / "ours", 1, 0)
    theirs = prepare(tmp_path / "theirs", 1, 0)
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_node(config(ours[0].dir)))
        x = await stack.enter_async_context(
            open_node(config(theirs[0].dir, (a.transport.addrs()[0],)))
        )
        await until("found twice", lambda: x.foreign.found >= 2)
        assert len(warnings_about(caplog, a.transport.peer_id)) >= 2


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_bootstrap_address_that_fails_is_said_once_a_while(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens at it: a warning at once (the node has no peer), naming the
    address and why; then silence while it keeps failing, for TELL_EVERY."""
    caplog.set_level(logging.INFO, logger="gossipmind.node")
    specs = prepare(tmp_path, 2, 0)
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_node(config(specs[0].dir)))
        dead = f"/ip4/127.0.0.1/tcp/{unused_port()}/p2p/{a.transport.peer_id}"
        b = await stack.enter_async_context(open_node(config(specs[1].dir, (dead,))))
        book = b.addrbook

        def fails() -> int:
            return book._fails.get(dead, (0, 0.0))[0]

        await until("three failed dials", lambda: fails() >= 3)
    said = [r for r in caplog.records if dead in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.WARNING
    assert "dial failed" in said[0].getMessage()


async def test_a_failing_bootstrap_address_is_said_again_after_tell_every(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peering, "TELL_EVERY", 0.0)
    caplog.set_level(logging.INFO, logger="gossipmind.node")
    specs = prepare(tmp_path, 1, 0)
    dead = f"/ip4/127.0.0.1/tcp/{unused_port()}/p2p/{PEER}"
    async with AsyncExitStack() as stack:
        node: Node = await stack.enter_async_context(open_node(config(specs[0].dir, (dead,))))
        await until("said twice", lambda: sum(dead in r.getMessage() for r in caplog.records) >= 2)
        assert node.transport.peers() == []


def test_a_flood_of_fresh_peer_ids_is_said_a_few_times_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Peer ids cost nothing to make: one warning line per peer let anyone who
    can complete handshakes flood the log. At most WARN_BURST lines in any
    WARN_WINDOW seconds; the next one counts those not said; every peer is
    still held and counted."""
    caplog.set_level(logging.WARNING, logger="gossipmind.node")
    peers = foreign.ForeignPeers()
    for i in range(100):
        peers.add(f"peer-{i}", i * 0.1)
    lines = [r.getMessage() for r in caplog.records if "another network" in r.getMessage()]
    assert len(lines) == foreign.WARN_BURST
    assert [line.split()[1] for line in lines] == [f"peer-{i}" for i in range(foreign.WARN_BURST)]
    assert peers.found == 100 and len(peers.held(10.0)) == 100
    caplog.clear()
    peers.add("peer-late", foreign.WARN_WINDOW + 0.1)  # the first five are out of the window
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("peer peer-late is on another network")
    assert line.endswith(
        f"({100 - foreign.WARN_BURST} more peers of another network were found and not said)"
    )
    caplog.clear()
    peers.add("peer-next", foreign.WARN_WINDOW + 0.2)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "more peers" not in line
