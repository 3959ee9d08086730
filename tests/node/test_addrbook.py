"""The peer-exchange address book is bounded whatever peers tell a node."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from gossipmind.net.fake import FakeNetwork
from gossipmind.node.addrbook import (
    MAX_ADDRS_PER_PEER,
    MAX_TAUGHT_PER_PEER,
    AddressBook,
    dialable,
)
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import open_node
from gossipmind.testnet.setup import prepare


def addr(peer: str, port: int = 4001) -> str:
    return f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"


def test_a_flood_of_addresses_keeps_the_most_recently_learned_peers() -> None:
    book = AddressBook("me", max_peers=100)
    for i in range(10_000):  # many peers' hellos, each naming a few fresh peers
        book.remember(f"p{i:05}", addr(f"p{i:05}", 1 + i), teacher=f"t{i // 8}")
    assert len(book) == 100
    assert "p09999" in book and "p09900" in book and "p09899" not in book
    book.remember("p09900", addr("p09900", 5), teacher="t9")  # learned again: most recent
    book.remember("x", addr("x", 6))
    assert "p09900" in book and "p09901" not in book


def test_each_peer_keeps_a_few_addresses_and_junk_is_ignored() -> None:
    book = AddressBook("me")
    for port in range(1, 21):
        book.remember("p", addr("p", port))
    assert book.addrs("p") == [addr("p", port) for port in range(21 - MAX_ADDRS_PER_PEER, 21)]
    book.remember("q", addr("someone-else"))  # the address names another peer
    book.remember("q", "/ip4/127.0.0.1/tcp/1")  # no peer id
    book.remember("me", addr("me"))  # ourselves
    book.remember("t", addr("t", 99), teacher="t")  # a peer telling us about itself
    assert "q" not in book and "me" not in book and "t" not in book and len(book) == 1


def test_one_teacher_holds_at_most_its_quota_and_its_newest_replace_its_oldest() -> None:
    """One connected peer's hellos replaced all 1 024 entries in ~64 sessions."""
    book = AddressBook("a")
    book.remember("honest", addr("honest", 1), teacher="friend")
    for i in range(5_000):
        book.remember(f"fake{i:04}", addr(f"fake{i:04}", 2 + i), teacher="mallory")
    assert book.taught_by("mallory") == MAX_TAUGHT_PER_PEER == len(book) - 1
    assert "honest" in book and "fake4999" in book and "fake0000" not in book


def test_what_others_say_never_displaces_what_a_peers_own_connection_showed() -> None:
    book = AddressBook("a")
    book.remember("b", addr("b", 1), teacher="mallory")
    book.remember("b", addr("b", 2))  # b's own connection: second-hand addresses give way
    assert book.addrs("b") == [addr("b", 2)]
    for port in range(3, 9):
        book.remember("b", addr("b", port), teacher="mallory")
    assert book.addrs("b") == [addr("b", 2)]


def test_one_endpoint_is_booked_under_one_peer_id() -> None:
    """A third party's host:port under 1 000 invented ids made every node dial it."""
    book = AddressBook("a")
    for i in range(1_000):
        book.remember(f"id{i:04}", addr(f"id{i:04}", 4242), teacher=f"t{i}")
    assert len(book) == 1 and book.candidates(set(), now=0.0) == [addr("id0000", 4242)]
    book.remember("real", addr("real", 4242))  # first-hand: the endpoint moved to it
    assert "id0000" not in book and book.addrs("real") == [addr("real", 4242)]


@pytest.mark.parametrize(
    "bad",
    [
        "/ip4/169.254.169.254/tcp/80",
        "/ip4/0.0.0.0/tcp/4001",
        "/ip4/224.0.0.1/tcp/9",
        "/ip4/255.255.255.255/tcp/1",
        "/ip6/fe80::1/tcp/1",
        "/ip6/::/tcp/1",
        "/ip4/127.0.0.1/udp/53",
        "/ip4/127.0.0.1/tcp/0",
        "/ip4/127.0.0.1/tcp/65536",
        "/ip4/127.0.0.1/tcp/+1",
        "/ip4/::1/tcp/1",
        "/ip6/127.0.0.1/tcp/1",
        "/dns4/metadata.google.internal/tcp/80",
        "/unix/run/docker.sock",
        "/ip4/127.0.0.1/tcp/1/ws",
        "/memory/other",
        "/ip4/127.0.0.1/tcp/1" + "/x" * 200,
    ],
)
def test_only_dialable_addresses_are_booked(bad: str) -> None:
    book = AddressBook("a")
    book.remember("b", f"{bad}/p2p/b", teacher="t")
    book.remember("b", f"{bad}/p2p/b")
    assert "b" not in book and not dialable(f"{bad}/p2p/b", "b")


@pytest.mark.parametrize(
    "good",
    [
        "/ip4/127.0.0.1/tcp/4001",
        "/ip4/10.0.0.1/tcp/22",
        "/ip4/192.168.1.1/tcp/443",
        "/ip4/8.8.8.8/tcp/65535",
        "/ip6/::1/tcp/6379",
        "/ip6/2001:db8::1/tcp/1",
        "/memory/b",
    ],
)
def test_loopback_private_and_public_hosts_are_booked(good: str) -> None:
    assert dialable(f"{good}/p2p/b", "b")


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
    for port, peer in enumerate(("a", "x", "y", "z"), start=1):
        book.remember(peer, addr(peer, port))
    assert book.candidates(skip={"y"}, now=0.0) == [addr("x", 2), addr("z", 4)]


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


def test_a_peer_that_moved_is_learned_at_its_new_address_once_its_old_one_fails() -> None:
    """A peer restarted on another port stayed unreachable for ~31 min from every
    node that had connected to it before: its old first-hand address, failing,
    refused the new one peer exchange brought, until 10 failures forgot it."""
    book = AddressBook("a")
    book.remember("b", addr("b", 1))  # first-hand, from b's connection
    book.remember("b", addr("b", 2), teacher="c")  # b works: hearsay gives way
    assert book.addrs("b") == [addr("b", 1)]
    book.failed(addr("b", 1), now=0.0)  # b moved: its old port refuses
    book.remember("b", addr("b", 2), teacher="c")  # c is connected to b at its new port
    assert book.candidates(set(), now=1.0) == [addr("b", 2)]
