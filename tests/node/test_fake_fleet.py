"""Nodes over the in-memory fake network (real SQLite stores): gossip + sync converge."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import trio

from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.testing import sample_report
from gossipmind.testnet.setup import prepare


async def wait_converged(nodes: list[Node], timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        while len({n.store.replica.root() for n in nodes}) != 1:
            await trio.sleep(0.05)


async def start(stack: AsyncExitStack, net: FakeNetwork, root: Path, n: int) -> list[Node]:
    specs = prepare(root, n, 1)
    nodes = []
    for s in specs:
        cfg = NodeConfig(data_dir=s.dir, sync_interval=0.5, synchronous="NORMAL")
        nodes.append(await stack.enter_async_context(open_node(cfg, fake=net)))
    for a in nodes[1:]:
        await a.transport.connect(nodes[0].transport.addrs()[0])
    return nodes


async def test_write_on_one_node_is_applied_on_all(tmp_path: Path) -> None:
    net = FakeNetwork(seed=1)
    async with AsyncExitStack() as stack:
        nodes = await start(stack, net, tmp_path, 5)
        op = await nodes[3].write("pattern.report", sample_report())
        with trio.fail_after(20):
            while not all(op.id in n.store.replica.meta for n in nodes):
                await trio.sleep(0.05)
        await wait_converged(nodes)


async def test_lossy_network_still_converges(tmp_path: Path) -> None:
    net = FakeNetwork(seed=2, drop=0.3, delay=(0.0, 0.05))
    async with AsyncExitStack() as stack:
        nodes = await start(stack, net, tmp_path, 4)
        for i in range(40):
            await nodes[i % 4].write("pattern.report", sample_report(count=1 + i % 3))
        await wait_converged(nodes, 60)
        assert len(nodes[0].store.replica.meta) >= 40


async def test_partition_and_heal(tmp_path: Path) -> None:
    net = FakeNetwork(seed=3)
    async with AsyncExitStack() as stack:
        nodes = await start(stack, net, tmp_path, 4)
        for a in nodes:
            for b in nodes:
                if a is not b and b.transport.peer_id not in a.transport.peers():
                    await a.transport.connect(b.transport.addrs()[0])
        await wait_converged(nodes)
        ids = [n.transport.peer_id for n in nodes]
        net.partition(ids[:2], ids[2:])
        for i in range(10):
            await nodes[0].write("pattern.report", sample_report(template=f"left {i} <*>"))
            await nodes[3].write("pattern.report", sample_report(template=f"right {i} <*>"))
        await trio.sleep(0.5)
        assert nodes[0].store.replica.root() != nodes[3].store.replica.root()
        net.heal()
        await wait_converged(nodes, 60)
