"""`gossipmind bench learning`: what a network saves each agent.

The same seeded fault schedule (a flaky search API: timeouts on 30 % of calls,
each agent calling it every ``interval`` seconds) is played twice, by N agents:

* **isolated** — each agent beside its own node in its own network (with its own
  verifier): every agent must suffer the failure before *its* node learns a fix;
* **networked** — the N agents' nodes in one network: the first failures anywhere
  teach everyone.

The figure is the number of failures the fleet meets before each agent has a
fix for them (after that, the agent recovers with the fix — how often is
reported as ``saved_by_fix``). The baseline is isolated ÷ N: the share a
perfect network would leave. Target: networked ≤ 1.25 x (isolated ÷ N).

Everything runs in one process on the in-memory fake network, with the real
node code (reporter, sleep-time learner, drills, verifier, fold, SQLite stores)
and the real executor, in virtual time (trio's MockClock): hours of agent time
take seconds.
"""

from __future__ import annotations

import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio.testing

from gossipmind.api.client import describe
from gossipmind.bench.common import machine, result
from gossipmind.core.policy import Policy
from gossipmind.learn.executor import Executor
from gossipmind.learn.patterns import Failure
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.testnet.scenario import Fault, FaultService, Scenario
from gossipmind.testnet.setup import prepare

SCENARIO = Scenario(
    name="learning-bench",
    description="",
    service="search",
    operation="query",
    idempotent=True,
    failure_rate=0.3,
    faults=(Fault("timeout", 1, "search for {customer} timed out after {ms} ms (req {req})"),),
    seed=2024,
)
POLICY = Policy(synthesis_threshold=1)
SETTINGS = {
    "synchronous": "NORMAL",
    "sync_interval": 5.0,
    "idle_s": 1.0,
    "report_window_ms": 200,
    "cpu_budget": 1.0,
}


@dataclass
class AgentStats:
    name: str
    suffered: int = 0  # failures met before this agent had a fix
    recovered_at: float | None = None  # when it first had a fix for a failure
    saved: int = 0  # failures the fix then recovered
    calls: int = 0


async def _agent(node: Node, stats: AgentStats, calls: int, interval: float, offset: float) -> None:
    svc = FaultService(SCENARIO, stats.name)
    executor = Executor()

    async def call(i: int) -> dict[str, Any]:
        return svc.call(i, f"{stats.name}@example.com", i)

    await trio.sleep(offset)  # agents are not synchronised: each has its own phase
    for i in range(calls):
        await trio.sleep(interval)
        stats.calls += 1
        try:
            await call(i)
            continue
        except TimeoutError as exc:
            name, message, status, retry_after = describe(exc)
            reduced = node.report_failure(
                Failure(
                    SCENARIO.service,
                    SCENARIO.operation,
                    name,
                    message,
                    status,
                    None,
                    None,
                    retry_after,
                )
            )
            fix = node.fixes.best(reduced.pattern)
            if fix is None:
                stats.suffered += 1  # the agent met the failure before it had a fix
                continue
            if stats.recovered_at is None:
                stats.recovered_at = trio.current_time()
            done = await executor.run_async(
                fix["recipe"], call, i, idempotent=True, prior_error=exc
            )
            stats.saved += int(done.ok)


async def _network(stack: AsyncExitStack, root: Path, agents: int) -> list[Node]:
    """One network: ``agents`` agent nodes (node-0 is the admin) and one verifier."""
    specs = prepare(root, agents + 1, 1, policy=POLICY)
    net = FakeNetwork(seed=1)
    nodes = []
    for s in specs:
        cfg = NodeConfig(data_dir=s.dir, verifier=s.role == "verifier", **SETTINGS)  # type: ignore[arg-type]
        nodes.append(await stack.enter_async_context(open_node(cfg, fake=net)))
    for n in nodes[1:]:
        await n.transport.connect(nodes[0].transport.addrs()[0])
    return [n for s, n in zip(specs, nodes, strict=True) if s.role != "verifier"]


async def _play(
    root: Path, n: int, isolated: bool, calls: int, interval: float
) -> list[AgentStats]:
    stats = [AgentStats(f"agent-{i + 1}") for i in range(n)]
    async with AsyncExitStack() as stack:
        if isolated:
            hosts = [(await _network(stack, root / f"iso-{i}", 1))[0] for i in range(n)]
        else:
            hosts = await _network(stack, root / "net", n)
        async with trio.open_nursery() as nursery:
            for i, (node, st) in enumerate(zip(hosts, stats, strict=True)):
                nursery.start_soon(_agent, node, st, calls, interval, interval * i / n)
    return stats


def measure(n: int, *, calls: int = 30, interval: float = 30.0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("isolated", "networked"):
        with tempfile.TemporaryDirectory(prefix=f"gm-learn-{mode}-") as tmp:
            stats = trio.run(
                _play,
                Path(tmp),
                n,
                mode == "isolated",
                calls,
                interval,
                clock=trio.testing.MockClock(autojump_threshold=0),
            )
        out[mode] = {
            "suffered": sum(s.suffered for s in stats),
            "per_agent": [s.suffered for s in stats],
            "recovered": sum(1 for s in stats if s.recovered_at is not None),
            "saved_by_fix": sum(s.saved for s in stats),
            "calls": sum(s.calls for s in stats),
        }
    return out


def run(
    sizes: tuple[int, ...] = (4, 8), *, calls: int = 30, interval: float = 30.0
) -> dict[str, Any]:
    per_n: dict[str, Any] = {}
    worst = 0.0
    for n in sizes:
        m = measure(n, calls=calls, interval=interval)
        ideal = m["isolated"]["suffered"] / n
        ratio = m["networked"]["suffered"] / ideal if ideal else float("inf")
        worst = max(worst, ratio)
        per_n[str(n)] = {
            **m,
            "ideal_share": round(ideal, 3),
            "ratio": round(ratio, 3),
            "passed": ratio <= 1.25,
        }
    big = per_n[str(sizes[-1])]
    return result(
        "learning",
        big["networked"]["suffered"],
        f"failures before recovery, networked fleet of {sizes[-1]}",
        big["ideal_share"],
        "<= 1.25",
        ratio=worst,
        sizes=per_n,
        schedule={
            "failure_rate": SCENARIO.failure_rate,
            "calls_per_agent": calls,
            "interval_s": interval,
            "seed": SCENARIO.seed,
        },
        note="baseline = isolated failures / N; ratio = the worst over all N",
        machine=machine(),
    )
