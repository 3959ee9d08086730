"""A node whose agent is never idle for ``idle_s`` still learns (node/learner.py).

A soak (s10) had agents make a request every ~0.7 s per node: no node learned in
17 minutes although many patterns were over the threshold, since learning ran
only after ``idle_s`` (5 s) without a request. When no round has completed for
``max_wait_s``, one round now runs while the agent is busy, within the CPU budget.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from gossipmind.node.learner import Learner
from gossipmind.testing import KB


@pytest.fixture
def kb() -> KB:
    """Four members reported the same failure: one pattern is due for synthesis."""
    kb = KB(seed=9)
    members = ("a", "b", "c", "d")
    for name in members:
        kb.grant("admin", name, "member")
        kb.replica(name)
    kb.sync_all()
    for name in members:
        for _ in range(5):
            kb.report(name, status="504")
    kb.sync_all()
    return kb


async def busy_for(kb: KB, seconds: float, max_wait_s: float) -> Learner:
    """Run a learner for ``seconds`` (mock time) while its agent makes a request
    every 0.7 s; return it."""
    proposed: list[dict[str, Any]] = []

    async def write(kind: str, body: dict[str, Any]) -> None:
        proposed.append(body)

    learner = Learner(kb.replica("admin"), write, idle_s=5.0, max_wait_s=max_wait_s)

    async def agent() -> None:
        while True:
            learner.activity()
            await trio.sleep(0.7)

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent)
            nursery.start_soon(learner.run)
    assert learner.stats.proposed == len(proposed)
    return learner


async def test_a_busy_agents_node_learns_once_it_waited_max_wait_s(
    kb: KB, autojump_clock: trio.testing.MockClock
) -> None:
    learner = await busy_for(kb, 200, max_wait_s=60)
    assert learner.stats.proposed >= 1 and learner.due() == []
    # one busy round per max_wait_s at most (the first after 60 s, then 120, 180)
    assert 1 <= learner.stats.busy_rounds <= 3


async def test_without_the_wait_bound_it_never_learned(
    kb: KB, autojump_clock: trio.testing.MockClock
) -> None:
    learner = await busy_for(kb, 200, max_wait_s=10_000)
    assert learner.stats.proposed == 0 and learner.stats.busy_rounds == 0
    assert len(learner.due()) == 1


async def test_an_idle_agent_needs_no_busy_round(
    kb: KB, autojump_clock: trio.testing.MockClock
) -> None:
    async def write(kind: str, body: dict[str, Any]) -> None:
        return None

    learner = Learner(kb.replica("admin"), write, idle_s=5.0, max_wait_s=60)
    with trio.move_on_after(200):
        await learner.run()
    assert learner.stats.proposed >= 1 and learner.stats.busy_rounds == 0
