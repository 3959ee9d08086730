"""What the network costs a node: catch-up once, gossip pacing, no needless checks."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from gossipmind.bench.catchup import build_history
from gossipmind.core.errors import NetworkError
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.testing import sample_report


def config(root: Path, i: int) -> NodeConfig:
    return NodeConfig(data_dir=root / f"node-{i}", synchronous="NORMAL", learn=False)


async def test_late_node_receives_each_missing_op_once(tmp_path: Path) -> None:
    _, missing = build_history(tmp_path, 5, 50, 300)
    net = FakeNetwork(seed=7)
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for i in range(4):
            nodes.append(await stack.enter_async_context(open_node(config(tmp_path, i), fake=net)))
        for a in nodes:
            for b in nodes:
                if a.transport.peer_id < b.transport.peer_id:
                    await a.transport.connect(b.transport.addrs()[0])
        target = nodes[0].store.replica.root()
        late = await stack.enter_async_context(open_node(config(tmp_path, 4), fake=net))
        assert late.store.replica.root() != target
        for peer in nodes:  # connections to every peer at once: syncs race
            await late.transport.connect(peer.transport.addrs()[0])
        with trio.fail_after(30):
            while late.store.replica.root() != target:
                await trio.sleep(0.01)
            while late.sync.sessions != (
                late.sync.completed + late.sync.failed + sum(late.sync.declined_by_reason.values())
            ):
                await trio.sleep(0.01)
        assert late.sync.ops_received == len(missing)
        sent = sum(n.sync.ops_sent for n in [*nodes, late])
        assert sent == len(missing)
        assert late.sync.refused + late.sync.sessions >= 1


async def test_only_one_end_of_a_new_connection_starts_a_sync(tmp_path: Path) -> None:
    build_history(tmp_path, 2, 10, 0)
    net = FakeNetwork(seed=8)
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_node(config(tmp_path, 0), fake=net))
        b = await stack.enter_async_context(open_node(config(tmp_path, 1), fake=net))
        await a.transport.connect(b.transport.addrs()[0])
        with trio.fail_after(10):
            while a.sync.completed + b.sync.completed < 2:
                await trio.sleep(0.01)
        await trio.sleep(0.2)
        # one session, counted at both ends (periodic rounds start after >= 1.5 s)
        assert a.sync.sessions == b.sync.sessions == 1


async def test_batch_interval_follows_the_gossip_budget(tmp_path: Path) -> None:
    build_history(tmp_path, 2, 0, 0)
    cfg = replace(config(tmp_path, 0), gossip_interval=0.05, gossip_budget=4.0)
    async with open_node(cfg, fake=FakeNetwork(seed=9)) as node:
        batcher = node.batcher

        def pace(heard_per_s: float, sent: int, carried: int, waiting: int = 0) -> float:
            now = trio.current_time()
            node.pacer._heard.clear()
            node.pacer._heard.extend([now] * int(heard_per_s * 2))  # over the 2 s window
            messages, ops = batcher.stats.messages, batcher.stats.ops
            node.pacer._last = (now - 1.0, messages - sent, ops - carried)
            batcher._queue.clear()
            for i in range(waiting):
                batcher._queue[bytes([i]) * 32] = b"x"
            node.pacer.pace(now)
            batcher._queue.clear()
            return batcher.interval

        assert batcher.interval == 0.05
        # over budget, and our batches merge several ops: wait longer, fewer messages
        assert pace(20, sent=2, carried=40) == 0.1
        assert pace(20, sent=1, carried=1, waiting=30) == 0.2
        # over budget but we send single ops: waiting would only delay them
        assert pace(20, sent=1, carried=1) == 0.1
        assert pace(20, sent=0, carried=0) == 0.1  # nothing to judge by: hold
        # well under budget: back to the least interval
        assert pace(1, sent=0, carried=0) == 0.05
        assert pace(1, sent=0, carried=0) == 0.05


async def test_own_ops_are_not_verified_again(tmp_path: Path) -> None:
    build_history(tmp_path, 2, 0, 0)
    net = FakeNetwork(seed=10)
    async with open_node(config(tmp_path, 0), fake=net) as node:
        op = await node.write("pattern.report", sample_report())
        assert node.validator.is_verified(op.id)
    # ops that arrived by sync (verified on ingest) are not checked again by gossip
    _, missing = build_history(tmp_path / "other", 2, 0, 3)
    async with open_node(config(tmp_path / "other", 1), fake=net) as node:
        result = node.ingest_raw(missing)
        assert len(result.applied) == 3
        assert all(node.validator.is_verified(op.id) for op in result.applied)


async def test_an_error_in_the_block_of_a_real_node_propagates(tmp_path: Path) -> None:
    """A libp2p transport torn down inside a cancelled scope used to turn the error
    crossing it into a Cancelled that the node's own nursery then absorbed."""
    build_history(tmp_path, 2, 0, 0)
    with pytest.raises(NetworkError, match="boom"):
        async with open_node(config(tmp_path, 0)):
            await trio.sleep(0.05)
            raise NetworkError("boom")

    async def value() -> int:
        async with open_node(config(tmp_path, 1)):
            await trio.sleep(0.05)
            return 42

    assert await value() == 42


def test_settled_heap_is_out_of_the_collectors_reach() -> None:
    import gc

    from gossipmind.node.heap import settle_heap, unsettle_heap

    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
    finally:
        unsettle_heap()
    assert gc.get_freeze_count() == 0


def test_periodic_rounds_back_off_only_while_gossip_brings_ops() -> None:
    from gossipmind.node.node import SYNC_BACKOFF, periodic_round_due

    assert all(periodic_round_due(skipped, False) for skipped in range(SYNC_BACKOFF + 2))
    due = [periodic_round_due(skipped, True) for skipped in range(SYNC_BACKOFF)]
    assert due == [False] * (SYNC_BACKOFF - 1) + [True]


async def test_anti_entropy_backs_off_while_gossip_flows_and_repairs_a_lost_tail(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Two nodes write in turn for 60 s (virtual time): gossip carries everything, so
    periodic rounds (every ~1 s) run about every SYNC_BACKOFF-th interval. Then the
    last op of the burst is lost by gossip: a round once gossip is quiet fetches it."""
    from gossipmind.node.node import SYNC_BACKOFF
    from gossipmind.testnet.setup import prepare

    net = FakeNetwork(seed=11)
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for spec in prepare(tmp_path, 2, 1):
            cfg = NodeConfig(data_dir=spec.dir, synchronous="NORMAL", learn=False, sync_interval=1)
            nodes.append(await stack.enter_async_context(open_node(cfg, fake=net)))
        a, b = nodes
        await a.transport.connect(b.transport.addrs()[0])
        with trio.fail_after(30):
            while a.store.replica.root() != b.store.replica.root() or a._syncing or b._syncing:
                await trio.sleep(0.1)
        started = a.sync.sessions + b.sync.sessions  # each session counts on both ends
        for i in range(240):  # 60 s of gossip, a write every 0.25 s
            await nodes[i % 2].write("pattern.report", sample_report(count=1 + i % 5))
            await trio.sleep(0.25)
        sessions = (a.sync.sessions + b.sync.sessions - started) / 2
        every_round = 2 * 60 / 1.0  # both nodes, one round per interval on average
        assert 0 < sessions <= 2 * every_round / SYNC_BACKOFF
        assert a.store.replica.root() == b.store.replica.root()
        assert b.counters.gossip_applied >= 100 and a.counters.gossip_applied >= 100

        net.set_faults(drop=1.0)  # gossip loses the last op: only anti-entropy brings it
        via_gossip, via_sync = b.counters.gossip_applied, b.sync.ops_received
        last = await a.write("pattern.report", sample_report(template="the lost tail <*>"))
        with trio.fail_after(2 * SYNC_BACKOFF * 1.5):  # well before a backed-off round
            while last.id not in b.store.replica.meta:
                await trio.sleep(0.1)
        assert b.counters.gossip_applied == via_gossip and b.sync.ops_received > via_sync
