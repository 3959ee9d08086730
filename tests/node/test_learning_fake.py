"""The learning loop on the fake network: reports → synthesis → drill → attest → accept."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import trio

from gossipmind.learn.patterns import Failure
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.testnet.setup import prepare


def timeout_failure(i: int) -> Failure:
    return Failure(
        service="search",
        operation="query",
        exc_type="httpx.ReadTimeout",
        status=504,
        message=f"GET /v1/search?q=shoes&user=user{i}@example.com timed out after {3000 + i} ms",
        context={"user": f"user{i}@example.com", "page": i},
        latency_ms=3000 + i,
    )


async def start(stack: AsyncExitStack, root: Path, n: int, verifiers: int) -> list[Node]:
    net = FakeNetwork(seed=5)
    specs = prepare(root, n, verifiers)
    nodes = []
    for s in specs:
        cfg = NodeConfig(
            data_dir=s.dir,
            sync_interval=0.5,
            synchronous="NORMAL",
            idle_s=0.2,
            report_window_ms=200,
            verifier=s.role == "verifier",
            cpu_budget=0.5,
        )
        nodes.append(await stack.enter_async_context(open_node(cfg, fake=net)))
    for a in nodes[1:]:
        await a.transport.connect(nodes[0].transport.addrs()[0])
    return nodes


async def test_fleet_learns_a_fix_the_fourth_node_never_reported(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        admin, verifier, a, b, newcomer = await start(stack, tmp_path, 5, 1)
        events = newcomer.fix_events()
        pattern = None
        for i in range(6):
            pattern = (a if i % 2 else b).report_failure(timeout_failure(i)).pattern
        assert pattern is not None
        with trio.fail_after(30):
            while newcomer.fixes.best(pattern) is None:
                await trio.sleep(0.05)
        fix = newcomer.fixes.best(pattern)
        assert fix is not None and fix["status"] == "accepted"
        assert newcomer.reporter.local_counts == {}  # it never saw the failure itself
        assert "retry" in [s["type"] for s in fix["recipe"]["steps"]]
        assert fix["attestations"][0]["verifier"] == verifier.identity.public
        # the transition is reported by the node's own task, which may run just
        # after the replica shows the fix: wait for it (bounded), then nothing
        # may change the fix's status again
        seen = []
        with trio.fail_after(10):
            while (fix["fix"], "accepted") not in [(t.fix, t.new) for t in seen]:
                seen.append(await events.receive())
        while True:
            try:
                seen.append(events.receive_nowait())
            except trio.WouldBlock:
                break
        assert [(t.fix, t.new) for t in seen if t.fix == fix["fix"]][-1] == (
            fix["fix"],
            "accepted",
        )
        # no raw data anywhere in what was replicated
        for n in (admin, newcomer):
            raws = b"".join(raw for _, raw in n.store.iter_raw(0, 10**6))
            assert b"example.com" not in raws and b"user3" not in raws
