"""A pattern whose fixes all ended rejected is looked at again, and a candidate
whose fix was rejected gives way to its fallback (node/learner.py, learn/synth.py).

The review of 28 November: the rate-limit rule takes a 4th attempt when its drill
stays under the verifiers' 3x amplification cap on the proposer's view of the
pattern, so it sits near that cap; a verifier whose view differs by a few reports
rejected it (7 of 66 nearby views), and no learner ever proposed the 3-attempt
recipe: every one had marked the pattern done until it restarted."""

from __future__ import annotations

from typing import Any

import trio.testing

from gossipmind.core.schema import fix_id
from gossipmind.core.snapshot import fix_row
from gossipmind.node.learner import Learner
from gossipmind.testing import KB
from gossipmind.testing.kb import sample_report

MEMBERS = ("a", "b", "c", "d")


def _kb() -> tuple[KB, bytes]:
    """Four members reported a 429 with a 1 s Retry-After: the rule's recipe retries
    4 times (its drill stays under the cap), with the 3-attempt one as its fallback."""
    kb = KB(seed=11)
    for name in MEMBERS:
        kb.grant("admin", name, "member")
        kb.replica(name)
    kb.grant("admin", "v", "verifier")
    kb.replica("v")
    kb.sync_all()
    for name in MEMBERS:
        body = sample_report(
            error_class="rate_limited",
            template="429 too many requests",
            retry_after_ms=1000,
            status="429",
            count=5,
        )
        kb.write(name, "pattern.report", body)
        pattern: bytes = body["pattern"]
    kb.sync_all()
    return kb, pattern


def _attempts(recipe: dict[str, Any]) -> int:
    (retry,) = [s for s in recipe["steps"] if s["type"] == "retry"]
    return int(retry["max_attempts"])


def _reject(kb: KB, fid: bytes) -> None:
    kb.sync("admin", "v")
    kb.write("v", "fix.attest", kb.attest_body(fid, "*", "reject"))
    kb.sync("v", "admin")


def _status(kb: KB, fid: bytes) -> str:
    replica = kb.replica("admin")
    row = fix_row(replica, replica.fold.fixes[fid])
    assert row is not None
    return str(row["status"])


async def test_a_rejected_4_attempt_fix_gives_way_to_the_3_attempt_one_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kb, pattern = _kb()
    proposed: list[dict[str, Any]] = []

    async def write(kind: str, body: dict[str, Any]) -> None:
        kb.write("admin", kind, body)
        proposed.append(body)

    learner = Learner(kb.replica("admin"), write, idle_s=0.0, cpu_budget=1.0)
    await learner.round()
    (first,) = proposed
    assert _attempts(first["recipe"]) == 4
    four = fix_id(pattern, first["recipe"])
    await learner.round()
    assert len(proposed) == 1 and learner.stats.reconsidered == 0  # done, nothing new

    _reject(kb, four)  # a verifier whose view put the drill over the cap
    assert _status(kb, four) == "rejected"
    await learner.round()
    assert len(proposed) == 2, learner.stats
    second = proposed[1]
    assert second["pattern"] == pattern and _attempts(second["recipe"]) == 3
    three = fix_id(pattern, second["recipe"])
    assert learner.stats.reconsidered == 1 and learner.stats.fallbacks == 1
    for _ in range(3):
        await learner.round()
    assert len(proposed) == 2  # the fallback is live: not looked at again

    _reject(kb, three)  # the fallback too: nothing left to propose, and nothing again
    for _ in range(3):
        await learner.round()
    assert len(proposed) == 2
    assert learner.stats.reconsidered == 2 and learner.due() == []


async def test_another_node_that_saw_the_fallback_proposed_does_not_propose_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The verdict and the fallback's proposal reach it together: the pattern has a
    live fix again, so it is not even looked at."""
    kb, pattern = _kb()
    written: dict[str, list[dict[str, Any]]] = {"admin": [], "a": []}

    def writer(name: str) -> Any:
        async def write(kind: str, body: dict[str, Any]) -> None:
            kb.write(name, kind, body)
            written[name].append(body)

        return write

    first = Learner(kb.replica("admin"), writer("admin"), idle_s=0.0, cpu_budget=1.0)
    other = Learner(kb.replica("a"), writer("a"), idle_s=0.0, cpu_budget=1.0)
    await first.round()
    kb.sync("admin", "a")
    await other.round()  # the 4-attempt fix is proposed already: skipped
    assert len(written["admin"]) == 1 and written["a"] == []
    four = fix_id(pattern, written["admin"][0]["recipe"])
    _reject(kb, four)
    await first.round()
    assert len(written["admin"]) == 2
    kb.sync("admin", "a")
    examined = other.examined
    await other.round()
    assert written["a"] == [] and other.stats.reconsidered == 0
    assert other.stats.skipped_proposed == 1 and other.stats.drilled == 0
    assert other.examined > examined  # it did look at the pattern's fixes
