"""The peer-exchange address book is bounded whatever peers tell a node."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import trio

from gossipmind.net.fake import FakeNetwork
from gossipmind.node.addrbook import MAX_ADDRS_PER_PEER, AddressBook
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import open_node
from gossipmind.testnet.setup import prepare


def addr(peer: str, port: int = 4001) -> str:
    return f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"


def test_a_flood_of_addresses_keeps_the_most_recently_learned_peers() -> None:
    book = AddressBook("me", max_peers=100)
    for i in range(10_000):  # a hostile peer's hellos: 16 fresh addresses each
        book.remember(f"p{i:05}", addr(f"p{i:05}"))
    assert len(book) == 100
    assert "p09999" in book and "p09900" in book and "p09899" not in book
    book.remember("p09900", addr("p09900", 5))  # learned again: now the most recent
    book.remember("x", addr("x"))
    assert "p09900" in book and "p09901" not in book


def test_each_peer_keeps_a_few_addresses_and_junk_is_ignored() -> None:
    book = AddressBook("me")
    for port in range(20):
        book.remember("p", addr("p", port))
    assert book.addrs("p") == [addr("p", port) for port in range(20 - MAX_ADDRS_PER_PEER, 20)]
    book.remember("q", addr("someone-else"))  # the address names another peer
    book.remember("q", "/ip4/127.0.0.1/tcp/1")  # no peer id
    book.remember("me", addr("me"))  # ourselves
    assert "q" not in book and "me" not in book and len(book) == 1


def test_forget_drops_an_address_and_then_its_peer() -> None:
    book = AddressBook("a")
    book.remember("b", addr("b", 1))
    book.remember("b", addr("b", 2))
    book.forget(addr("b", 2))
    assert book.addrs("b") == [addr("b", 1)]
    book.forget(addr("b", 1))
    assert "b" not in book
    book.forget(addr("b", 1))  # forgetting twice is harmless


def test_only_the_smaller_peer_id_dials_and_skipped_peers_are_not_offered() -> None:
    book = AddressBook("m")
    for peer in ("a", "x", "y", "z"):
        book.remember(peer, addr(peer))
    assert book.candidates(skip={"y"}, now=0.0) == [addr("x"), addr("z")]


async def test_nodes_that_know_one_bootstrap_peer_find_each_other(tmp_path: Path) -> None:
    net = FakeNetwork(seed=12)
    specs = prepare(tmp_path, 5, 0)
    async with AsyncExitStack() as stack:

        def config(i: int, boot: tuple[str, ...]) -> NodeConfig:
            return NodeConfig(
                data_dir=specs[i].dir,
                sync_interval=0.2,
                synchronous="NORMAL",
                learn=False,
                min_peers=4,
                bootstrap=boot,
            )

        hub = await stack.enter_async_context(open_node(config(0, ()), fake=net))
        boot = (hub.transport.addrs()[0],)
        nodes = [hub]
        for i in range(1, 5):
            nodes.append(await stack.enter_async_context(open_node(config(i, boot), fake=net)))
        with trio.fail_after(30):
            while not all(len(n.transport.peers()) == 4 for n in nodes):
                await trio.sleep(0.05)
        # what they learned came from completed sessions, one entry per peer
        for n in nodes:
            assert len(n.addrbook) <= 4
            assert n.transport.peer_id not in n.addrbook
