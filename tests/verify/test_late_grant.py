"""A verifier node started before its grant judges what it saw once the grant
arrives (FINDINGS 3 of the verification review; operations.md "Getting granted":
start the node, then an admin grants its key the verifier role).

Every fix the loop saw before the grant (tier 0) was put in its `_judged` set for
the life of the process: after the grant it was never judged.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import trio

from gossipmind.core.policy import Policy
from gossipmind.learn.patterns import Failure
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.groups import unwrapped
from gossipmind.node.node import open_node
from gossipmind.testing.fleet import FAST
from gossipmind.testnet.setup import prepare


def failure(i: int) -> Failure:
    return Failure(
        "search", "query", "TimeoutError", f"search {i} timed out after 3000 ms", 504, {}, 3000
    )


async def test_a_verifier_started_before_its_grant_judges_the_fixes_it_saw(
    tmp_path: Path,
) -> None:
    # node-0 admin; node-1 a plain member started with --verifier (its grant comes
    # later); node-2 and node-3 agents whose learners propose a fix
    specs = prepare(tmp_path, 4, 0, policy=Policy(scope_risk={}))
    net = FakeNetwork(seed=7)
    async with unwrapped(), AsyncExitStack() as stack:
        nodes = []
        for s in specs:
            config = NodeConfig(data_dir=s.dir, verifier=s.name == "node-1", **FAST)
            nodes.append(await stack.enter_async_context(open_node(config, fake=net)))
        admin, late, *agents = nodes
        for n in nodes[1:]:
            await n.transport.connect(admin.transport.addrs()[0])
        for i in range(4):
            pattern = agents[i % 2].report_failure(failure(i)).pattern
        with trio.fail_after(60):  # the learners propose; the late verifier sees it
            while not (rows := late.fixes.rows(pattern=pattern)):
                await trio.sleep(0.05)
            while late.verifier.stats.out_of_scope == 0:
                await trio.sleep(0.05)
        fix = rows[0]["fix"]
        assert late.verifier.stats.checked == 0
        assert late.store.replica.roles(late.identity.public).tier_for("search.query") == 0
        body = {
            "member": late.identity.public,
            "role": "verifier",
            "name": "node-1",
            "tier": 1,
            "scopes": ["search"],
        }
        await admin.write("member.grant", body)
        with trio.fail_after(60):
            while (admin.fixes.row(fix) or {}).get("status") != "accepted":
                await trio.sleep(0.05)
        row = admin.fixes.row(fix)
        assert row is not None
        assert [a["verifier"] for a in row["attestations"]] == [late.identity.public]
        assert late.verifier.stats.checked >= 1 and late.verifier.stats.accepted >= 1
