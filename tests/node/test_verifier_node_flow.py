"""A verifier node under a steady flow of reports reads no fix (node/verifier.py).

Any op applied made the verifier's next tick a pass over every fix, twice: on a
busy network, where reports always flow, that was every tick (20 000 fixes:
~30 % of a core, loop stalls of 1.7 s). The node now tells its verifier the ops
it applies (``Node._applied``), and a pass reads only the fixes they can change.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from gossipmind.core import snapshot
from gossipmind.net.fake import FakeNetwork
from gossipmind.node import verifier as verifier_mod
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.testing import sample_recipe, sample_report
from gossipmind.testnet.setup import prepare

FIXES = 8


async def settled(node: Node) -> None:
    """Until the verifier's passes stop (bounded by the caller's deadline)."""
    while True:
        passes = node.verifier.passes
        await trio.sleep(20 * node.verifier.tick_s)
        if node.verifier.passes == passes:
            return


async def holds(node: Node, op_id: bytes) -> None:
    while op_id not in node.store.replica.meta:
        await trio.sleep(0.01)


async def test_a_verifier_node_reads_no_fix_under_a_steady_flow_of_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    real = snapshot.fix_row

    def counting(replica: Any, f: Any) -> Any:
        reads.append(1)
        return real(replica, f)

    monkeypatch.setattr(verifier_mod, "fix_row", counting)
    net = FakeNetwork(seed=5)
    specs = prepare(tmp_path, 2, verifiers=1)
    async with AsyncExitStack() as stack:
        nodes = []
        for s in specs:
            cfg = NodeConfig(
                data_dir=s.dir,
                sync_interval=0.5,
                synchronous="OFF",
                learn=False,
                verifier=s.role == "verifier",
            )
            nodes.append(await stack.enter_async_context(open_node(cfg, fake=net)))
        admin, ver = nodes
        ver.verifier.tick_s = 0.01
        await ver.transport.connect(admin.transport.addrs()[0])
        for i in range(FIXES):
            report = sample_report(service="search", operation=f"op{i}")
            await admin.write("pattern.report", report)
            body = {
                "pattern": report["pattern"],
                "recipe": sample_recipe(f"search.op{i}"),
                "risk": "low",
                "rationale": "test",
                "origin": "synth",
            }
            await admin.write("fix.propose", body)
        with trio.fail_after(60):
            while ver.verifier.stats.checked < FIXES:
                await trio.sleep(0.01)
            await settled(ver)
        assert ver.verifier.stats.accepted == FIXES
        before, passes = len(reads), ver.verifier.passes
        held = len(ver.store.replica.meta)
        for k in range(40):  # reports of known patterns: a steady flow, ~4 per tick
            op = await admin.write(
                "pattern.report", sample_report(service="search", operation=f"op{k % FIXES}")
            )
            await trio.sleep(0.0025)
        with trio.fail_after(30):
            await holds(ver, op.id)
            await settled(ver)
        assert len(ver.store.replica.meta) >= held + 40
        assert (len(reads), ver.verifier.passes) == (before, passes)  # was every fix at each tick
        # an outcome of one fix: that fix alone is read, in one pass (for the outcome
        # watch: what waits for a verdict skips the fixes it judged without a read)
        body = {"fix": ver.fixes.rows()[0]["fix"], "attempts": 4, "successes": 4, "window": [0, 1]}
        op = await admin.write("fix.outcome", body)
        with trio.fail_after(30):
            await holds(ver, op.id)
            await settled(ver)
        assert (len(reads), ver.verifier.passes) == (before + 1, passes + 1)
