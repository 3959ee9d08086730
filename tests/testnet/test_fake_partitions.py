"""Nodes (real stores, real sync) on the fake network under random faults converge.

A seeded loop per case: ops written on random nodes while the network drops and
delays gossip and is cut into random partitions that come and go. After the last
heal every replica must reach one state root holding every op written.
"""

from __future__ import annotations

import random
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from tnkit import report, until

from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.testnet.setup import prepare


async def _fleet(stack: AsyncExitStack, net: FakeNetwork, root: Path, n: int) -> list[Node]:
    nodes = []
    for spec in prepare(root, n, 1):
        config = NodeConfig(
            data_dir=spec.dir, sync_interval=0.3, synchronous="NORMAL", learn=False, min_peers=2
        )
        nodes.append(await stack.enter_async_context(open_node(config, fake=net)))
    for i, a in enumerate(nodes):  # a ring plus chords: every node has two or more links
        for b in (nodes[(i + 1) % n], nodes[(i + 2) % n]):
            if b.transport.peer_id not in a.transport.peers():
                await a.transport.connect(b.transport.addrs()[0])
    return nodes


def _random_groups(rng: random.Random, peers: list[str]) -> list[list[str]]:
    shuffled = rng.sample(peers, len(peers))
    cuts = sorted(rng.sample(range(1, len(peers)), rng.randint(1, 2)))
    return [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(peers)], strict=True)]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
async def test_random_partitions_drops_and_delays_still_converge(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    net = FakeNetwork(seed=seed, drop=rng.choice([0.1, 0.3, 0.5]), delay=(0.0, 0.03))
    async with AsyncExitStack() as stack:
        nodes = await _fleet(stack, net, tmp_path, 5)
        peers = [n.transport.peer_id for n in nodes]
        written: set[bytes] = set()
        partitions = 0
        for step in range(60):
            roll = rng.random()
            if roll < 0.1:
                net.partition(*_random_groups(rng, peers))
                partitions += 1
            elif roll < 0.18:
                net.heal()
            else:
                node = rng.choice(nodes)
                op = await node.write("pattern.report", report(f"fake {seed}", step))
                written.add(op.id)
            await trio.sleep(rng.uniform(0.0, 0.04))
        net.heal()

        def converged() -> bool:
            root = nodes[0].store.replica.root()
            return all(
                written <= n.store.replica.meta.keys() and n.store.replica.root() == root
                for n in nodes
            )

        def state() -> str:  # what a failure should tell
            return "; ".join(
                f"{n.transport.peer_id[:6]}: ops {len(n.store.replica.meta)} missing "
                f"{len(written - n.store.replica.meta.keys())} "
                f"pending {len(n.store.replica.pending)} "
                f"peers {len(n.transport.peers())} sync {n.sync.completed}/{n.sync.sessions} "
                f"failed {dict(n.sync.failed_by_reason)}"
                for n in nodes
            )

        try:
            await until(converged, "every replica holds every op, one root", timeout=25)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {state()}") from None
        assert partitions > 0 and net.stats.dropped > 0
