"""A node keeps dialling across a cut once it heals (node.peering, docs/sync.md §4).

A node dialled only while it had fewer than ``min_peers`` connections, so two
groups that each kept that many inside stayed apart after a partition healed:
ops acknowledged on one side never reached the other.
"""

from __future__ import annotations

import random
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from gossipmind.net.fake import FakeNetwork
from gossipmind.node import addrbook
from gossipmind.node.config import NodeConfig
from gossipmind.node.foreign import ForeignPeers
from gossipmind.node.node import Node, open_node
from gossipmind.node.peering import Peering
from gossipmind.testing import sample_report
from gossipmind.testnet.setup import prepare


async def start(
    stack: AsyncExitStack, root: Path, n: int, net: FakeNetwork | None, **settings: object
) -> list[Node]:
    """n nodes (real libp2p on 127.0.0.1 unless ``net``), all connected to all."""
    nodes = []
    for spec in prepare(root, n, 0):
        cfg = NodeConfig(
            data_dir=spec.dir, sync_interval=0.5, synchronous="NORMAL", learn=False
        ).with_overrides(**settings)
        nodes.append(await stack.enter_async_context(open_node(cfg, fake=net)))
    for a in nodes:
        for b in nodes:
            if a is not b and b.transport.peer_id not in a.transport.peers():
                await a.transport.connect(b.transport.addrs()[0])
    return nodes


def ids(nodes: list[Node]) -> set[str]:
    return {n.transport.peer_id for n in nodes}


async def knows_everyone(nodes: list[Node]) -> None:
    """Every node can dial every peer it is to dial (the smaller id dials)."""
    with trio.fail_after(30):
        while not all(len(n.addrbook) == len(nodes) - 1 for n in nodes):
            await trio.sleep(0.05)


async def applied_everywhere(nodes: list[Node], op_id: bytes, timeout: float) -> None:
    with trio.fail_after(timeout):
        while not all(op_id in n.store.replica.meta for n in nodes):
            await trio.sleep(0.05)


def crossing(nodes: list[Node], left: list[Node]) -> int:
    """Connections between ``left`` and the rest."""
    return sum(len(set(n.transport.peers()) - ids(left)) for n in left)


async def test_heal_over_libp2p_reconnects_halves_that_kept_min_peers_inside(
    tmp_path: Path,
) -> None:
    """testnet partition/heal (Node.block) of four nodes, min_peers=1: each half
    keeps its one in-half peer; exploration is 1 h away, so only lifting the
    block can bring the halves together."""
    async with AsyncExitStack() as stack:
        nodes = await start(stack, tmp_path, 4, None, min_peers=1, explore_interval=3600)
        await knows_everyone(nodes)
        left, right = nodes[:2], nodes[2:]
        for half, other in ((left, right), (right, left)):
            for n in half:
                await n.block(ids(other))
        with trio.fail_after(10):
            while crossing(nodes, left):
                await trio.sleep(0.05)
        for n in nodes:
            await n.block(set())
        op = await nodes[0].write("pattern.report", sample_report(template="after heal <*>"))
        await applied_everywhere(nodes, op.id, 30)
        assert crossing(nodes, left) >= 1
        assert sum(n.peering.explored for n in nodes) >= 1


@pytest.mark.parametrize("boot", [(), ("/memory/dead/p2p/dead",)], ids=["", "dead-bootstrap"])
async def test_a_real_cut_heals_by_exploration_and_addresses_survive_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, boot: tuple[str, ...]
) -> None:
    """A cut of the network itself (links dropped, dials failing meanwhile), healed
    without restoring a link: exploration dials across it again. Dials that failed
    during the cut back off; they no longer forget the address. A bootstrap
    address that never answers took every exploration (bootstrap came first):
    the cut never healed."""
    monkeypatch.setattr(addrbook, "DIAL_BACKOFF_FIRST", 0.2)
    monkeypatch.setattr(addrbook, "DIAL_BACKOFF_CAP", 0.5)
    net = FakeNetwork(seed=21)
    async with AsyncExitStack() as stack:
        nodes = await start(
            stack, tmp_path, 6, net, min_peers=2, explore_interval=1, bootstrap=boot
        )
        await knows_everyone(nodes)
        left, right = nodes[:3], nodes[3:]
        net.partition(ids(left), ids(right))
        op = await nodes[0].write("pattern.report", sample_report(template="during cut <*>"))
        await trio.sleep(4)  # explorations across the cut fail meanwhile
        assert crossing(nodes, left) == 0
        assert not any(op.id in n.store.replica.meta for n in right)
        assert all(len(n.addrbook) == 5 for n in nodes)  # failed dials forgot nothing
        net.heal(reconnect=False)
        await applied_everywhere(nodes, op.id, 30)
        assert crossing(nodes, left) >= 1


def test_a_failing_address_backs_off_then_is_forgotten() -> None:
    book = addrbook.AddressBook("a")
    addr = "/ip4/127.0.0.1/tcp/1/p2p/b"
    book.remember("b", addr)
    assert book.candidates(set(), now=0.0) == [addr]
    book.failed(addr, now=0.0)
    assert book.candidates(set(), now=4.9) == []
    assert book.candidates(set(), now=5.0) == [addr]
    book.failed(addr, now=5.0)  # second failure in a row: twice as long
    assert book.candidates(set(), now=14.9) == [] and book.candidates(set(), now=15.0) == [addr]
    book.succeeded(addr)  # forgiven
    assert book.candidates(set(), now=5.0) == [addr]
    now = 0.0
    for _ in range(addrbook.MAX_DIAL_FAILURES):
        book.failed(addr, now)
        now += addrbook.DIAL_BACKOFF_CAP
    assert "b" not in book  # ten failures in a row: forgotten
    book.failed(addr, now)  # not in the book now: backs off as a bootstrap address
    assert not book.ready(addr, now) and book.ready(addr, now + 1.0)
    book.remember("b", addr)  # a peer shares it again: back, with a clean slate
    assert book.candidates(set(), now=now) == [addr]


class _Transport:
    def __init__(self, addrs: dict[str, list[str]]) -> None:
        self._addrs = addrs

    def peers(self) -> list[str]:
        return list(self._addrs)

    def peer_addrs(self, peer: str) -> list[str]:
        return self._addrs[peer]


class _Node:
    """What Peering reads of a node (its dial and share rules, without a network)."""

    def __init__(self, bootstrap: tuple[str, ...], addrs: dict[str, list[str]]) -> None:
        self.config = NodeConfig(data_dir=Path("."), bootstrap=bootstrap, max_peers=12)
        self.addrbook = addrbook.AddressBook("a")
        self.blocked: set[str] = set()
        self.foreign = ForeignPeers()
        self.transport = _Transport(addrs)
        self._rng = random.Random(5)


async def test_bootstrap_addresses_lead_every_round_whatever_peers_told_us() -> None:
    """One peer's hellos filled the book and the bootstrap peer was among the 12
    addresses dialled in ~1 % of rounds (operations.md: dialled whenever below
    min_peers)."""
    boot = ("/ip4/127.0.0.1/tcp/7000/p2p/zboot",)
    node = _Node(boot, {})
    for i in range(16):
        for t in range(64):
            node.addrbook.remember(
                f"p{t}-{i}", f"/ip4/127.0.0.1/tcp/{1 + t * 16 + i}/p2p/p{t}-{i}", f"t{t}"
            )
    peering = Peering(node)  # type: ignore[arg-type]
    assert len(node.addrbook) == 1024
    for _ in range(100):
        round_ = peering.candidates(set())
        assert round_[0] == boot[0] and len(round_) == 12


def test_a_peer_is_shared_by_an_address_others_can_reach() -> None:
    """A node listening on 0.0.0.0 shared a loopback address for about half its
    peers (the peerstore's order varies), which no other host can dial."""
    node = _Node(
        (),
        {
            "b": ["/ip4/127.0.0.1/tcp/4001/p2p/b", "/ip4/10.1.2.3/tcp/4001/p2p/b"],
            "c": ["/ip4/127.0.0.1/tcp/4002/p2p/c"],  # a testnet: loopback is all it has
        },
    )
    shared = Peering(node).share_addrs()  # type: ignore[arg-type]
    assert shared == ["/ip4/10.1.2.3/tcp/4001/p2p/b", "/ip4/127.0.0.1/tcp/4002/p2p/c"]


def test_a_peer_that_moved_is_shared_by_its_new_address() -> None:
    """A peer restarted on another port was shared by its old one: py-libp2p keeps
    the address a failed dial stored first, and identify's new one after it, so
    every node learned the dead address of a peer connected here at its new one."""
    old, new = "/ip4/127.0.0.1/tcp/23517/p2p/b", "/ip4/127.0.0.1/tcp/24601/p2p/b"
    node = _Node((old,), {"b": [old, new]})
    node.addrbook.failed(old, 0.0)  # our bootstrap dial to its old port failed
    assert Peering(node).share_addrs() == [new]  # type: ignore[arg-type]


def test_a_peers_word_about_itself_never_takes_another_peers_endpoint() -> None:
    """A connected peer announcing an honest peer's host:port as its own (identify)
    evicted the honest peer's first-hand address for good."""
    book = addrbook.AddressBook("a")
    honest, mallory = "/ip4/10.0.0.5/tcp/4001/p2p/h", "/ip4/10.0.0.5/tcp/4001/p2p/m"
    book.remember("h", honest)
    book.remember("m", mallory)
    assert book.addrs("h") == [honest] and "m" not in book
    book.remember("m", mallory, teacher="x")  # nor through hearsay
    assert book.addrs("h") == [honest] and "m" not in book


async def test_a_full_node_does_not_blame_the_address_it_had_no_room_to_dial() -> None:
    """max_peers above the transport's cap: dials refused here for lack of room
    counted as the address failing, and healthy peers were forgotten."""
    full = {f"p{i:02}": [f"/ip4/127.0.0.1/tcp/{4000 + i}/p2p/p{i:02}"] for i in range(12)}
    node = _Node((), full)
    node.config = NodeConfig(data_dir=Path("."), max_peers=1000)
    node.addrbook.remember("zz", "/ip4/127.0.0.1/tcp/5000/p2p/zz")
    peering = Peering(node)  # type: ignore[arg-type]
    assert peering.limit() == 12
    assert not await peering._dial("/ip4/127.0.0.1/tcp/5000/p2p/zz")
    assert node.addrbook.ready("/ip4/127.0.0.1/tcp/5000/p2p/zz", trio.current_time())


async def test_a_peer_that_dialled_us_is_booked_once_a_session_completes(
    tmp_path: Path,
) -> None:
    """Its address was read when it connected, before it had said (identify) where
    it listens: only the smaller id may redial, and it had no address."""
    async with AsyncExitStack() as stack:
        specs = prepare(tmp_path, 2, 0)
        nodes = []
        for spec in specs:
            cfg = NodeConfig(
                data_dir=spec.dir,
                sync_interval=0.5,
                synchronous="NORMAL",
                learn=False,
                explore_interval=3600,
            )
            nodes.append(await stack.enter_async_context(open_node(cfg)))
        small, large = sorted(nodes, key=lambda n: n.transport.peer_id)
        await large.transport.connect(small.transport.addrs()[0])  # the larger dials
        with trio.fail_after(30):
            while large.transport.peer_id not in small.addrbook:
                await trio.sleep(0.05)
        assert small.addrbook.addrs(large.transport.peer_id)[-1].startswith("/ip4/127.0.0.1/")
