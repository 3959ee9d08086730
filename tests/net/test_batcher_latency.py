"""Gossip costs: a lone op leaves at once, batches under load, ops decoded once."""

from __future__ import annotations

import itertools

import pytest
import trio
from netkit import NET_ID, identity, make_op

from gossipmind.net.gossip import GossipBatcher, decode_batch, encode_batch, make_validator

ALICE = identity(1)


def ops(n: int) -> list[bytes]:
    return [make_op(ALICE, NET_ID, seq).raw for seq in range(1, n + 1)]


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[float, list[bytes]]] = []

    async def publish(self, data: bytes) -> None:
        self.messages.append((trio.current_time(), decode_batch(data)))


async def test_lone_op_leaves_without_waiting_for_the_interval(
    autojump_clock: trio.abc.Clock,
) -> None:
    rec = Recorder()
    batcher = GossipBatcher(rec.publish, interval=0.5)
    a, b, c = ops(3)
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        t0 = trio.current_time()
        await batcher.put(a)
        await trio.sleep(0.001)
        assert [m for _, m in rec.messages] == [[a]]
        assert rec.messages[0][0] == t0  # no batching delay for an op on an idle batcher
        await batcher.put(b)  # within the interval: waits for it, with whatever follows
        await batcher.put(c)
        await trio.sleep(1)
        await batcher.put(a)  # a duplicate of an op already sent is sent again, at once
        await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert [m for _, m in rec.messages] == [[a], [b, c], [a]]
    times = [t - t0 for t, _ in rec.messages]
    assert times[1] == 0.5
    assert times[2] >= 1.0


async def test_steady_load_is_still_one_message_per_interval(
    autojump_clock: trio.abc.Clock,
) -> None:
    rec = Recorder()
    batcher = GossipBatcher(rec.publish, interval=0.1)
    raws = ops(100)
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        for raw in raws:  # 100 ops over 1 s
            await batcher.put(raw)
            await trio.sleep(0.01)
        await batcher.flush()
        nursery.cancel_scope.cancel()
    assert [r for _, batch in rec.messages for r in batch] == raws
    assert len(rec.messages) <= 11
    times = [t for t, _ in rec.messages]
    assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(times))


def test_validator_hands_over_the_ops_it_decoded() -> None:
    v = make_validator(NET_ID)
    raws = ops(3)
    data = encode_batch(raws)
    assert v(data)
    checked, carried = v.decode(data)
    assert [op.raw for op, _ in checked] == raws and carried == 3
    assert all(ok for _, ok in checked)
    again, _ = v.decode(data)  # not cached any more: decoded afresh, still verified
    assert [op.raw for op, _ in again] == raws
    assert all(ok for _, ok in again)
    assert again[0][0] is not checked[0][0]


def test_batcher_interval_can_be_adapted() -> None:
    async def nop(data: bytes) -> None:
        return None

    b = GossipBatcher(nop, interval=0.05)
    b.interval = 0.5
    assert b.interval == 0.5
    with pytest.raises(ValueError):
        b.interval = 0
