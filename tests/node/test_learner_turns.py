"""Idle nodes that see a pattern cross the threshold together take turns to
propose its fix (node/learner.py, ``proposer_rank``): in a 1-hour soak four idle
nodes wrote 1 117 ``fix.propose`` ops for 315 fixes (docs/reliability.md,
"Soak"). Real libp2p nodes on 127.0.0.1, no verifier (no fix is ever accepted,
so nothing but the turns keeps a node from proposing)."""

from __future__ import annotations

from pathlib import Path

import trio

from gossipmind.core.policy import Policy
from gossipmind.core.replica import Replica
from gossipmind.learn.patterns import Failure, reduce
from gossipmind.node.learner import _turn_key, proposer_rank
from gossipmind.testing.fleet import Running, fleet

N = 4
OPERATIONS = ("query", "browse", "lookup")


def failure(operation: str, i: int) -> Failure:
    return Failure(
        service="search",
        operation=operation,
        exc_type="httpx.ReadTimeout",
        status=504,
        message=f"GET /v1/search?q=shoes timed out after {3000 + i} ms",
        context={"page": i},
        latency_ms=3000 + i,
    )


async def _connected(nodes: list[Running]) -> None:
    with trio.fail_after(30):
        while not all(len(r.node.transport.peers()) >= 1 for r in nodes):
            await trio.sleep(0.05)


async def _report_everywhere(nodes: list[Running]) -> set[bytes]:
    """Every node reports a failure of every operation: each pattern gets its N-th reporter, and
    so crosses the threshold (N), on every node at about the same time."""
    patterns = set()
    for i, r in enumerate(nodes):
        for t in OPERATIONS:
            patterns.add(r.node.report_failure(failure(t, i)).pattern)
    await _busy_until_all_due(nodes, patterns)
    return patterns


async def _busy_until_all_due(nodes: list[Running], patterns: set[bytes]) -> None:
    """The agents stay busy (no learning) until every node has every pattern over
    the threshold: then all go idle at once, as in the soak's load pauses."""
    with trio.fail_after(30):
        while not all(
            (p := r.node.store.replica.fold.patterns.get(pid)) is not None and p.reporters == N
            for r in nodes
            for pid in patterns
        ):
            for r in nodes:
                r.node.touch()
            await trio.sleep(0.05)
    for r in nodes:
        r.node.touch()


async def _settled(nodes: list[Running], patterns: set[bytes], learning: list[Running]) -> None:
    """Every learning node is done with every pattern, and every replica holds the
    same ops."""
    with trio.fail_after(90):
        while not all(p in r.node.learner._done for r in learning for p in patterns):
            await trio.sleep(0.1)
        while len({r.node.store.replica.root() for r in nodes}) > 1:
            await trio.sleep(0.1)


def propose_ops(replica: Replica, patterns: set[bytes]) -> int:
    """The fix.propose ops the replica holds for these patterns (each proposer's
    proposal of a fix is one op: the learner proposes a fix once)."""
    return sum(
        len(replica.fold.fix_view(f).proposals)
        for f in replica.fold.fixes.values()
        if f.pattern in patterns and f.recipe is not None
    )


async def test_idle_nodes_crossing_a_threshold_together_propose_each_fix_about_once(
    tmp_path: Path,
) -> None:
    policy = Policy(synthesis_threshold=N)
    async with fleet(tmp_path, N, 0, fake=False, api=False, policy=policy) as nodes:
        await _connected(nodes)
        patterns = await _report_everywhere(nodes)
        assert len(patterns) == len(OPERATIONS)
        await _settled(nodes, patterns, nodes)
        replica = nodes[0].node.store.replica
        fixes = {
            fid
            for fid, f in replica.fold.fixes.items()
            if f.pattern in patterns and replica.fold.fix_view(f).proposals
        }
        ops = propose_ops(replica, patterns)
        stats = [r.node.learner.stats for r in nodes]
        assert {replica.fold.fixes[f].pattern for f in fixes} == patterns  # each got its fix
        # before the turns: every node drilled and proposed every fix (12 ops for 3
        # fixes here); now the first-ranked node proposes and the others find it
        assert ops < 2 * len(fixes), (ops, len(fixes), stats)
        assert sum(s.proposed for s in stats) == ops
        assert sum(s.drilled for s in stats) == ops  # the nodes that waited drilled nothing
        assert sum(s.skipped_proposed for s in stats) >= N * len(fixes) - ops  # not drilled
        assert all(s.waiting_turn == 0 for s in stats)


async def test_the_fix_is_proposed_when_the_first_ranked_node_never_proposes(
    tmp_path: Path,
) -> None:
    policy = Policy(synthesis_threshold=N)
    async with fleet(tmp_path, N, 0, fake=False, api=False, policy=policy) as nodes:
        await _connected(nodes)
        pattern = reduce(failure("query", 0)).pattern
        keys = [r.node.identity.public for r in nodes]
        # every node is a member and will report: the first in turn is the one whose
        # key hashes lowest with the pattern; its learner never runs a round
        dead = nodes[min(range(N), key=lambda i: _turn_key(pattern, keys[i]))]

        async def never(*_: object) -> int:
            return 0

        dead.node.learner.round = never  # type: ignore[method-assign]
        for i, r in enumerate(nodes):
            assert r.node.report_failure(failure("query", i)).pattern == pattern
        await _busy_until_all_due(nodes, {pattern})
        ranks = [
            proposer_rank(r.node.store.replica, pattern, k)
            for r, k in zip(nodes, keys, strict=True)
        ]
        assert sorted(ranks) == list(range(N))  # a strict order, the same everywhere
        assert ranks[nodes.index(dead)] == 0
        learning = [r for r in nodes if r is not dead]
        await _settled(nodes, {pattern}, learning)
        replica = dead.node.store.replica
        assert propose_ops(replica, {pattern}) >= 1  # the second in turn proposed it
        assert dead.node.learner.stats.proposed == 0
        second = nodes[ranks.index(1)]
        assert second.node.learner.stats.proposed >= 1
