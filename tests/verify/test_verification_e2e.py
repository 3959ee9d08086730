"""Issue 5 end to end on real libp2p nodes.

Two tier-1 verifiers, one tier-2, a person (tier 3) and agents:
a low-risk fix is accepted automatically; a high-risk payments fix waits until
the person accepts it with `gossipmind review`; a fix whose outcomes turn bad is
revoked by the tier-2 verifier, and agents stop applying it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

from gossipmind.api.client import Client
from gossipmind.core.policy import Policy
from gossipmind.learn.patterns import Failure
from gossipmind.testing.fleet import Running, fleet

GM = str(Path(sys.executable).with_name("gossipmind"))


def failure(service: str, operation: str, i: int) -> Failure:
    return Failure(
        service,
        operation,
        "TimeoutError",
        f"{service} call {i} timed out after 3000 ms",
        504,
        {"i": i},
        3000,
    )


async def status_everywhere(
    nodes: list[Running], fix: bytes, want: str, timeout: float = 40
) -> None:
    with trio.fail_after(timeout):
        while any((n.node.fixes.row(fix) or {}).get("status") != want for n in nodes):
            await trio.sleep(0.1)


async def gm(*args: str) -> str:
    proc = await trio.run_process(
        [GM, *args], capture_stdout=True, capture_stderr=True, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


async def test_quorums_a_person_and_revocation_on_real_nodes(tmp_path: Path) -> None:
    policy = Policy(scope_risk={"payments": "high"}, evidence_min_reporters=3)
    async with fleet(
        tmp_path,
        7,
        4,
        fake=False,
        policy=policy,
        verifier_tiers=[1, 1, 2, 3],
        sync_interval=1.0,
        revoke_window_s=1.0,  # the tier-2 node revokes once 1 s of outcomes stayed bad 1 s
        revoke_confirm_s=1.0,
    ) as nodes:
        admin, v1a, v1b, v2, person, agent_a, agent_b = nodes
        with trio.fail_after(30):
            while not all(n.node.transport.peers() for n in nodes):
                await trio.sleep(0.05)

        # 1. low risk: accepted by a tier-1 verifier, automatically
        for i in range(4):
            search = (agent_a if i % 2 else agent_b).node.report_failure(
                failure("search", "query", i)
            )
        with trio.fail_after(40):
            while not (fixes := admin.node.fixes.rows(pattern=search.pattern)):
                await trio.sleep(0.1)
        low = fixes[0]["fix"]
        await status_everywhere(nodes, low, "accepted")
        row = admin.node.fixes.row(low)
        assert row is not None and row["risk"] == "low"
        assert {a["tier"] for a in row["attestations"]} == {1}

        # 2. high risk (payments): tier-1 accepts are not enough; a person decides
        for i in range(4):
            pay = (agent_a if i % 2 else agent_b).node.report_failure(
                failure("payments", "charge", i)
            )
        with trio.fail_after(40):
            while not (fixes := admin.node.fixes.rows(pattern=pay.pattern)):
                await trio.sleep(0.1)
        high = fixes[0]["fix"]
        with trio.fail_after(40):
            while len((person.node.fixes.row(high) or {}).get("accepts", [])) < 2:
                await trio.sleep(0.1)
        row = person.node.fixes.row(high)
        assert row is not None and row["status"] == "proposed" and row["risk"] == "high"
        waiting = json.loads(await gm("--data-dir", str(person.spec.dir), "review", "--json"))
        assert [w["fix"] for w in waiting] == [high.hex()]
        await gm(
            "--data-dir",
            str(person.spec.dir),
            "review",
            high.hex()[:12],
            "--accept",
            "--comment",
            "charges carry an idempotency key; ok",
        )
        await status_everywhere(nodes, high, "accepted")
        row = admin.node.fixes.row(high)
        assert row is not None and max(a["tier"] for a in row["attestations"]) == 3

        # 3. outcomes turn bad: the tier-2 verifier revokes, agents stop applying it
        client = Client(agent_b.spec.dir)
        assert await trio.to_thread.run_sync(client.wait_ready, 10)
        assert client.fix_for(search.pattern) is not None
        with trio.fail_after(40):  # the fix keeps failing: bad totals, then bad windows
            while (admin.node.fixes.row(low) or {}).get("status") != "revoked":
                for n in (admin, agent_a, agent_b):
                    n.node.report_outcome(low, attempts=10, successes=0)
                await trio.sleep(0.3)
        await status_everywhere(nodes, low, "revoked")
        row = admin.node.fixes.row(low)
        assert row is not None and "outcomes turned bad" in row["revocations"][0]["reason"]
        assert row["revocations"][0]["by"] == v2.node.identity.public
        with trio.fail_after(10):
            while client.fix_for(search.pattern) is not None:
                await trio.sleep(0.05)
        await trio.to_thread.run_sync(client.close)
        assert v1a.node.verifier.stats.accepted >= 1 and v1b.node.verifier.stats.checked >= 1
