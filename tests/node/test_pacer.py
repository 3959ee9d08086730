"""Gossip pacing: batches wait at most the node's fair share of the network's budget."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gossipmind.net.gossip import BatcherStats
from gossipmind.node.pacer import MAX_INTERVAL, MAX_TRACKED, ORIGIN_WINDOW, Pacer

LEAST = 0.05  # the default gossip_interval
BUDGET = 4.0  # a budget (the default is 8)


@dataclass
class Batcher:
    """What the pacer reads and sets of a GossipBatcher."""

    interval: float = LEAST
    pending: int = 0
    stats: BatcherStats = field(default_factory=BatcherStats)


def loaded(pacer: Pacer, batcher: Batcher, now: float, heard_per_s: float) -> None:
    """One pacing step of a node under load: it hears ``heard_per_s`` messages/s
    and sent one batch of 20 ops since the last step."""
    for i in range(int(heard_per_s * 0.5)):
        pacer._heard.append(now - i * 0.01)
    batcher.stats.messages += 1
    batcher.stats.ops += 20
    pacer.pace(now)


@pytest.mark.parametrize(
    ("publishers", "cap"), [(1, 0.25), (3, 0.75), (10, 2.5), (40, MAX_INTERVAL)]
)
def test_under_load_the_interval_stops_at_the_fair_share(publishers: int, cap: float) -> None:
    batcher = Batcher()
    pacer = Pacer(batcher, LEAST, BUDGET)  # type: ignore[arg-type]
    now = 0.0
    for _ in range(40):  # 20 s far over budget
        now += 0.5
        for p in range(publishers - 1):
            pacer.heard(f"peer{p}", now)
        loaded(pacer, batcher, now, heard_per_s=50)
    assert pacer.publishers(now) == publishers
    assert batcher.interval == pytest.approx(cap)


def test_publishers_gone_quiet_are_forgotten_and_the_interval_follows() -> None:
    batcher = Batcher()
    pacer = Pacer(batcher, LEAST, BUDGET)  # type: ignore[arg-type]
    now = 0.0
    for _ in range(20):
        now += 0.5
        for p in range(9):
            pacer.heard(f"peer{p}", now)
        loaded(pacer, batcher, now, heard_per_s=50)
    assert batcher.interval == pytest.approx(2.5)
    # eight of them stop publishing; the two that go on are still over budget
    quiet_since = now
    while now < quiet_since + ORIGIN_WINDOW + 1:
        now += 0.5
        pacer.heard("peer0", now)
        loaded(pacer, batcher, now, heard_per_s=50)
    assert pacer.publishers(now) == 2
    assert batcher.interval == pytest.approx(0.5)


def test_the_publishers_remembered_are_bounded() -> None:
    pacer = Pacer(Batcher(), LEAST, BUDGET)  # type: ignore[arg-type]
    for p in range(MAX_TRACKED + 500):
        pacer.heard(f"peer{p}", 1.0)
    assert len(pacer._origins) == MAX_TRACKED
    assert pacer.fair_interval(1.0) == MAX_INTERVAL
    assert pacer.publishers(1.0 + ORIGIN_WINDOW + 1) == 1  # all forgotten


def test_a_network_of_pacers_settles_at_its_budget() -> None:
    """Ten nodes with always something to send, in virtual time: each publishes
    when its interval has passed, every other node hears it. Over the last 30 s
    the network sends about its budget; no node waits longer than 2.5 s."""
    nodes = [Batcher() for _ in range(10)]
    pacers = [Pacer(b, LEAST, BUDGET) for b in nodes]  # type: ignore[arg-type]
    last_sent = [-1.0] * len(nodes)
    sent_at: list[float] = []
    now, step = 0.0, 0.01
    while now < 60.0:
        now = round(now + step, 2)
        for i, (batcher, pacer) in enumerate(zip(nodes, pacers, strict=True)):
            batcher.pending = 100  # a backlog: a source of load
            if now - last_sent[i] >= batcher.interval:
                last_sent[i] = now
                batcher.stats.messages += 1
                batcher.stats.ops += 50
                sent_at.append(now)
                for j, other in enumerate(pacers):
                    if j != i:
                        other.heard(f"node{i}", now)
            pacer.pace(now)
    rate = sum(1 for t in sent_at if t > 30.0) / 30.0
    assert BUDGET * 0.8 <= rate <= BUDGET * 1.1
    assert all(b.interval <= 2.5 + 1e-9 for b in nodes)
