"""Several nodes with their HTTP APIs in one trio run (fake or real libp2p network)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from gossipmind.api.server import serve_api
from gossipmind.core.policy import Policy
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.groups import unwrapped
from gossipmind.node.node import Node, open_node
from gossipmind.testnet.setup import NodeSpec, prepare

FAST = {
    "sync_interval": 0.5,
    "synchronous": "NORMAL",
    "idle_s": 0.3,
    "report_window_ms": 200,
    "cpu_budget": 0.5,
}


@dataclass
class Running:
    node: Node
    url: str
    spec: NodeSpec

    @property
    def token(self) -> str:
        return (self.spec.dir / "api.token").read_text().strip()


@asynccontextmanager
async def fleet(
    root: Path,
    n: int,
    verifiers: int = 1,
    *,
    fake: bool = True,
    api: bool = True,
    policy: Policy | None = None,
    verifier_tiers: list[int] | None = None,
    **cfg: Any,
) -> AsyncIterator[list[Running]]:
    """``n`` nodes (node-0 admin, then verifiers), connected through node-0."""
    specs = prepare(root, n, verifiers, policy=policy, verifier_tiers=verifier_tiers)
    net = FakeNetwork(seed=7) if fake else None
    settings = {**FAST, **cfg}
    async with unwrapped(), AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        out: list[Running] = []
        for s in specs:
            boot = tuple(out[0].node.transport.addrs()[:1]) if out and not fake else ()
            config = NodeConfig(
                data_dir=s.dir, verifier=s.role == "verifier", bootstrap=boot, **settings
            )
            node = await stack.enter_async_context(open_node(config, fake=net))
            url = await nursery.start(serve_api, node) if api else ""
            out.append(Running(node, url, s))
        if fake:
            for r in out[1:]:
                await r.node.transport.connect(out[0].node.transport.addrs()[0])
        try:
            yield out
        finally:
            nursery.cancel_scope.cancel()
