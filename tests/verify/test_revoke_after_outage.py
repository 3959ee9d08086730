"""A tier-2 verifier revokes a fix that stopped working, not one whose service was
down for a while (node/verifier.py).

The s12 soak: once a node was granted tier 2, it revoked the network's own
inventory fix within 30 s of a 4-minute 503 outage ("fleet success <= 11.6 %"),
for good. During an outage every call fails whatever the recipe, and outcomes
are each author's running totals, so the totals stayed bad for hours after it.
Virtual time (trio's MockClock); one outcome op per agent per minute."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from gossipmind.core.policy import Policy
from gossipmind.core.snapshot import fix_row
from gossipmind.node.verifier import REVOKE_CONFIRM_S, REVOKE_WINDOW_S, Verifier
from gossipmind.testing import KB, sample_recipe
from gossipmind.verify.checks import fleet_evidence

AGENTS = ("c1", "c2", "c3")


def network() -> tuple[KB, bytes]:
    """An accepted fix that worked: each agent saw it succeed 20 times out of 20."""
    kb = KB(seed=4, policy=Policy(scope_risk={}))
    for n in AGENTS:
        kb.grant("admin", n, "member")
    kb.grant("admin", "v1", "verifier", tier=1)
    kb.grant("admin", "v2", "verifier", tier=2)
    for n in (*AGENTS, "v1", "v2"):
        kb.sync("admin", n)
    pid = kb.report("c1", error_class="server_error", status="503").body["pattern"]
    kb.report("c2", error_class="server_error", status="503")
    kb.sync("c1", "c2")
    fix = kb.propose("c2", pid, sample_recipe("search.query", attempts=3))
    kb.sync("c2", "v1")
    kb.write("v1", "fix.attest", kb.attest_body(fix, "search"))
    for a in AGENTS:
        kb.sync("v1", a)
        outcomes(kb, a, fix, 20, 20)
        kb.sync(a, "v2")
    return kb, fix


def outcomes(kb: KB, who: str, fix: bytes, attempts: int, successes: int) -> None:
    body = {"fix": fix, "attempts": attempts, "successes": successes, "window": [0, 1000]}
    kb.write(who, "fix.outcome", body)
    kb.sync(who, "v2")


class Run:
    def __init__(self, kb: KB) -> None:
        self.kb = kb
        self.revokes: list[dict[str, Any]] = []

        async def write(kind: str, body: dict[str, Any]) -> None:
            assert kind == "fix.revoke"
            self.revokes.append(body)
            kb.write("v2", kind, body)

        self.verifier = Verifier(kb.replica("v2"), kb.key("v2"), write)

    async def minute(self, fix: bytes, attempts: int, successes: int) -> None:
        """A minute of use: each agent reports its outcomes, the verifier looks."""
        await trio.sleep(60)
        for a in AGENTS:
            outcomes(self.kb, a, fix, attempts, successes)
        await self.verifier.watch_outcomes([fix])

    def status(self, fix: bytes) -> str:
        r = self.kb.replica("v2")
        row = fix_row(r, r.fold.fixes[fix])
        assert row is not None
        return str(row["status"])


async def test_a_four_minute_outage_does_not_get_a_working_fix_revoked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kb, fix = network()
    run = Run(kb)
    for _ in range(4):  # the outage: every call fails, ~17 uses a minute per agent
        await run.minute(fix, 17, 0)
    r = kb.replica("v2")
    row = fix_row(r, r.fold.fixes[fix])
    assert row is not None and fleet_evidence(row, r.policy)[0] == "bad"  # the totals
    assert run.verifier.stats.suspected == 1
    for _ in range(15):  # the service is back: the fix works, ~2 uses a minute
        await run.minute(fix, 2, 2)
    assert run.revokes == [] and run.status(fix) == "accepted"
    assert run.verifier.stats.suspected == 1  # 50 successes of 118 per agent: bad totals
    assert run.verifier._suspects[fix].bad_since is None  # but its last 10 minutes are good
    for _ in range(75):  # and for the next hour and a quarter
        await run.minute(fix, 2, 2)
    assert run.revokes == [] and run.status(fix) == "accepted"


async def test_a_fix_that_stopped_working_is_revoked_after_the_window_and_confirmation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kb, fix = network()
    run = Run(kb)
    start = trio.current_time()
    revoked_at = None
    for _ in range(60):
        await run.minute(fix, 5, 0)  # it fails every time now, and keeps failing
        if run.revokes and revoked_at is None:
            revoked_at = trio.current_time() - start
    assert revoked_at is not None and run.status(fix) == "revoked"
    assert (
        REVOKE_WINDOW_S + REVOKE_CONFIRM_S <= revoked_at <= REVOKE_WINDOW_S + REVOKE_CONFIRM_S + 180
    )
    (body,) = run.revokes
    assert body["reason"].startswith("outcomes turned bad: fleet success")
    assert "over the last 600 s" in body["reason"]
    assert run.verifier.stats.revoked == 1 and run.verifier.stats.suspected == 0


async def test_an_outage_longer_than_the_confirmation_still_revokes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The limit, as documented: windows bad for ``revoke_confirm_s`` are all the
    verifier sees of a fix; a 30-minute outage looks like a fix that stopped working."""
    kb, fix = network()
    run = Run(kb)
    for _ in range(30):
        await run.minute(fix, 17, 0)
    assert len(run.revokes) == 1


async def test_totals_that_recover_clear_the_suspicion(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kb, fix = network()
    run = Run(kb)
    await run.minute(fix, 17, 0)  # a short blip makes the totals bad (20/37 per agent)
    assert run.verifier.stats.suspected == 1
    for _ in range(5):
        await run.minute(fix, 40, 40)  # heavy use that works: the totals recover
    assert run.verifier.stats.suspected == 0 and run.revokes == []


async def test_a_window_too_thin_to_judge_does_not_revoke(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Bad windows for 10 minutes, then a look whose window holds one success per
    agent (no verdict either way): the fix is revoked at the next bad window only."""
    kb, fix = network()
    run = Run(kb)
    for _ in range(19):
        await run.minute(fix, 5, 0)
    assert run.revokes == []
    await trio.sleep(REVOKE_WINDOW_S)  # quiet: the next window holds only what comes now
    await run.minute(fix, 1, 1)
    assert run.revokes == [] and run.verifier._suspects[fix].bad_since is not None
    for _ in range(3):
        await run.minute(fix, 5, 0)
    assert len(run.revokes) == 1


async def test_a_second_short_outage_does_not_get_a_suspect_fix_revoked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A fix still suspected after a first outage (its totals stay bad for hours)
    has windows from the start of a second one: the window stays bad for the
    outage plus up to ``revoke_window_s`` after it, so a 4-minute outage is
    "bad at every look for revoke_confirm_s" (found by review2, s12)."""
    kb, fix = network()
    run = Run(kb)
    for _ in range(4):  # the first outage
        await run.minute(fix, 17, 0)
    for _ in range(15):  # back: the windows turn good, the totals stay bad
        await run.minute(fix, 2, 2)
    assert run.verifier.stats.suspected == 1 and run.verifier._suspects[fix].bad_since is None
    for _ in range(4):  # a second 4-minute outage, shorter than revoke_confirm_s
        await run.minute(fix, 17, 0)
    for _ in range(20):  # the service is back for good
        await run.minute(fix, 2, 2)
    assert run.revokes == [] and run.status(fix) == "accepted"


async def test_a_suspect_fix_that_stops_working_is_still_revoked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """... while one that stops working for good after the first outage is revoked
    once its window held only failures for ``revoke_confirm_s``."""
    kb, fix = network()
    run = Run(kb)
    for _ in range(4):
        await run.minute(fix, 17, 0)
    for _ in range(15):
        await run.minute(fix, 2, 2)
    start = trio.current_time()
    revoked_at = None
    for _ in range(40):  # it fails every time from now on
        await run.minute(fix, 5, 0)
        if run.revokes and revoked_at is None:
            revoked_at = trio.current_time() - start
    assert revoked_at is not None and run.status(fix) == "revoked"
    assert revoked_at <= REVOKE_WINDOW_S + REVOKE_CONFIRM_S + 180


async def test_one_agent_alone_in_the_windows_cannot_get_a_suspect_fix_revoked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A window is judged on the agents that reported in it: after an outage made
    the totals bad, one member reporting failures alone while the others are quiet
    is too few agents (``evidence_min_reporters``) to revoke on."""
    kb, fix = network()
    run = Run(kb)
    for _ in range(3):
        await run.minute(fix, 17, 0)  # an outage: the totals are bad
    assert run.verifier.stats.suspected == 1
    for _ in range(60):
        await trio.sleep(60)
        outcomes(kb, "c1", fix, 10, 0)  # c1 alone, every minute, for an hour
        await run.verifier.watch_outcomes([fix])
    assert run.revokes == [] and run.status(fix) == "accepted"
