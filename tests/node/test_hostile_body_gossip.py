"""One gossiped op with an array where a recipe step's ``type`` belongs, signed by
a key nobody granted, stopped every node that received it: the gossip validator
checks the encoding and the signature only (so it forwards it), and the body
check raised ``TypeError`` out of ingest and the node's gossip loop. Real nodes
on 127.0.0.1 (libp2p), real SQLite stores.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import trio

from gossipmind.core import ops as opsmod
from gossipmind.core.identity import Identity
from gossipmind.core.schema import pattern_id
from gossipmind.net.gossip import encode_batch
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.testing import sample_report
from gossipmind.testnet.setup import prepare


async def reaches(op_id: bytes, node: Node, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while op_id not in node.store.replica.meta:
            await trio.sleep(0.05)


async def test_a_gossiped_step_type_array_is_rejected_and_the_nodes_keep_running(
    tmp_path: Path,
) -> None:
    specs = prepare(tmp_path, 3, 0)
    async with AsyncExitStack() as stack:
        nodes = []
        for s in specs:
            cfg = NodeConfig(data_dir=s.dir, sync_interval=0.5, synchronous="NORMAL", learn=False)
            nodes.append(await stack.enter_async_context(open_node(cfg)))
        for node in nodes[1:]:
            await node.transport.connect(nodes[0].transport.addrs()[0])
        first = await nodes[2].write("pattern.report", sample_report(template="before <*>"))
        for node in nodes:  # the mesh carries ops
            await reaches(first.id, node)

        r = nodes[1].store.replica
        body = {
            "pattern": pattern_id("s", "o", "timeout", "t"),
            "risk": "low",
            "rationale": "",
            "origin": "synth",
            "recipe": {"scope": "s", "steps": [{"type": []}]},
        }
        stranger = Identity(b"\x05" * 32)
        bad = opsmod.create(
            stranger, net=r.net, kind="fix.propose", seq=1, lamport=2, deps=[r.net], ts=0, body=body
        )
        await nodes[1].transport.publish(encode_batch([bad.raw]))
        with trio.fail_after(20):
            while not all(bad.id in n.store.replica.rejected for n in (nodes[0], nodes[2])):
                await trio.sleep(0.05)
        for node in (nodes[0], nodes[2]):
            assert node.store.replica.rejected[bad.id][0] == "schema"
            assert node.counters.rejected_by_reason.get("schema") == 1
            assert node.store.broken is None

        after = await nodes[0].write("pattern.report", sample_report(template="after <*>"))
        for node in nodes:  # every node still applies gossip
            await reaches(after.id, node)
