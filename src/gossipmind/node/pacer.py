"""Gossip pacing: how long a node's batches wait, so the network keeps to its budget.

Every gossip message costs every node CPU whatever its size (LIBP2P_NOTES: ~2 ms
per link; measured in the throughput bench with Yamux's window updates batched:
~1.5 ms per node, all links and our per-batch ingest), so the network affords a
few messages per second
(``gossip_budget``), not one per node per 50 ms. Each node measures the rate
of messages it hears (its own included) and, when it is over budget *and* it is
a source of load — its batches carry ``PACE_MERGE`` ops on average or
``PACE_BACKLOG`` wait in its batcher, so waiting longer merges them — stretches
its batch interval; below half the budget, or when its batches carry single
ops, it shrinks it back. An op written on an idle node still leaves at once
(see GossipBatcher): the interval only spaces batches under load.

The interval never exceeds the node's **fair share** of the budget: with ``P``
nodes publishing (those heard from in the last ``ORIGIN_WINDOW`` seconds, and
this one), ``P / gossip_budget`` seconds is the interval at which the network
sends exactly its budget when every publisher waits as long. Waiting longer
only adds latency: ten nodes at a budget of 4 messages/s had stretched to 5 s
where 2.5 s keep the budget, and an op took twice as long to reach every node.
``MAX_INTERVAL`` bounds the share of a large network (latency over budget).
"""

from __future__ import annotations

from collections import deque

from gossipmind.net.gossip import GossipBatcher

PACE_EVERY = 0.5  # seconds between two adjustments of the batch interval
PACE_STEP = 2.0  # factor by which the interval grows or shrinks at each adjustment
MAX_INTERVAL = 5.0
PACE_MERGE = 4  # our batches carry this many ops on average: we are a source of load
PACE_BACKLOG = 16  # or this many ops wait in our batcher
RATE_WINDOW = 2.0  # seconds over which the network's gossip message rate is measured
ORIGIN_WINDOW = 2 * MAX_INTERVAL  # a publisher heard within this long is active
MAX_TRACKED = 4096  # messages and publishers remembered (memory bound)


class Pacer:
    """Adapts ``batcher.interval``; fed with the messages the node hears."""

    def __init__(self, batcher: GossipBatcher, least: float, budget: float) -> None:
        self.batcher = batcher
        self.least = least  # the configured gossip_interval
        self.budget = budget
        self._heard: deque[float] = deque(maxlen=MAX_TRACKED)  # times of messages heard
        self._origins: dict[str, float] = {}  # publisher -> when last heard
        self._last = (0.0, 0, 0)  # (time, batcher messages, batcher ops) at the last pacing

    def heard(self, origin: str, now: float) -> None:
        """A gossip message from publisher ``origin`` arrived at ``now``."""
        self._heard.append(now)
        if origin in self._origins or len(self._origins) < MAX_TRACKED:
            self._origins[origin] = now

    def publishers(self, now: float) -> int:
        """Publishers active within ``ORIGIN_WINDOW``, this node included."""
        old = [o for o, t in self._origins.items() if t < now - ORIGIN_WINDOW]
        for origin in old:
            del self._origins[origin]
        return len(self._origins) + 1

    def fair_interval(self, now: float) -> float:
        """The longest the interval may be: this node's share of the budget."""
        return min(MAX_INTERVAL, max(self.least, self.publishers(now) / self.budget))

    def pace(self, now: float) -> None:
        """Adjust the interval (at most every ``PACE_EVERY`` seconds)."""
        last, messages, ops = self._last
        if now - last < PACE_EVERY:
            return
        stats = self.batcher.stats
        self._last = (now, stats.messages, stats.ops)
        while self._heard and self._heard[0] < now - RATE_WINDOW:
            self._heard.popleft()
        own = (stats.messages - messages) / min(now - last, RATE_WINDOW)
        rate = len(self._heard) / RATE_WINDOW + own
        sent, carried = stats.messages - messages, stats.ops - ops
        waiting = self.batcher.pending >= PACE_BACKLOG
        interval = self.batcher.interval
        if rate > self.budget and (waiting or carried >= PACE_MERGE * sent > 0):
            interval *= PACE_STEP
        elif rate < self.budget / 2 or (sent and carried < 2 * sent and not waiting):
            interval /= PACE_STEP
        self.batcher.interval = max(self.least, min(self.fair_interval(now), interval))
