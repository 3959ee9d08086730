"""A verifier pass reads only the fixes whose row can have changed (node/verifier.py).

Every pass built the row of every fix the replica held, twice (what waits for a
verdict, then outcomes to watch), and any op at all — a pattern report — made
the next tick a pass: with 20 000 fixes under a steady flow of reports, 40 000
rows per 0.5 s tick. A pass now reads the fixes the ops since the last pass can
change (``FixChanges``, fed by ``Node._applied``), those whose write failed, and
every fix when the verifier's roles change or ops applied unnoted.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest

from gossipmind.core import snapshot
from gossipmind.core.errors import InvalidOp, StoreError
from gossipmind.core.ops import Op
from gossipmind.core.replica import Replica
from gossipmind.node import verifier as verifier_mod
from gossipmind.node.verifier import Verifier
from gossipmind.testing import KB, sample_recipe, sample_report
from gossipmind.testing.kb import History

FIXES = 40


class Reads:
    """fix_row calls made by the verifier module, by whoever is ``current``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.by: dict[str, int] = {}
        self.current = ""
        real = snapshot.fix_row

        def counting(replica: Any, f: Any) -> Any:
            self.by[self.current] = self.by.get(self.current, 0) + 1
            return real(replica, f)

        monkeypatch.setattr(verifier_mod, "fix_row", counting)

    def total(self) -> int:
        return sum(self.by.values())


def accepted_fixes(kb: KB) -> tuple[Replica, list[bytes]]:
    """FIXES fixes, each of its own pattern, accepted by v0; v1 (tier 2) watches them."""
    kb.grant("admin", "agent", "member")
    kb.grant("admin", "v0", "verifier", tier=1, scopes=("search",))
    kb.grant("admin", "v1", "verifier", tier=2, scopes=("search",))
    for name in ("agent", "v0", "v1"):
        kb.sync("admin", name)
    fixes = []
    for i in range(FIXES):
        pattern = kb.report("agent", service="search", operation=f"op{i}").body["pattern"]
        fixes.append(kb.propose("agent", pattern, sample_recipe(f"search.op{i}"), "low"))
    kb.sync("agent", "v0")
    for fix in fixes:
        kb.write("v0", "fix.attest", kb.attest_body(fix, "search"))
    r = Replica(kb.genesis)
    for op in kb.ops[1:]:
        r.ingest(op, verified=True)
    return r, fixes


def noted(r: Replica, v: Verifier, ops: list[Op]) -> None:
    """Apply ``ops`` and tell the verifier, as Node._applied does."""
    applied = [x for op in ops for x in r.ingest(op, verified=True).applied]
    v.note(applied)


async def test_a_steady_flow_of_reports_reads_no_fix_and_an_outcome_reads_its_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kb = KB()
    r, fixes = accepted_fixes(kb)
    reads = Reads(monkeypatch)

    async def write(kind: str, body: dict[str, Any]) -> None:
        raise AssertionError(f"nothing to write: {kind}")

    v = Verifier(r, kb.key("v1"), write)
    assert await v.tick() and reads.total() == 2 * FIXES  # the first pass reads every fix
    for tick in range(20):  # reports of known patterns: they change no fix's row
        reports = [kb.report("agent", service="search", operation=f"op{tick % FIXES}")]
        reports += [kb.report("agent", service="search", operation=f"new{tick}")]  # a new one
        noted(r, v, reports)
        assert not await v.tick()
    assert reads.total() == 2 * FIXES and v.passes == 1
    # an outcome: its fix alone is read (what waits for a verdict, outcomes to watch)
    body = {"fix": fixes[3], "attempts": 4, "successes": 4, "window": [0, 1]}
    noted(r, v, [kb.write("agent", "fix.outcome", body)])
    assert await v.tick() and reads.total() == 2 * FIXES + 2
    # a change of my own roles (a grant of myself): every fix again
    noted(r, v, [kb.grant("admin", "v1", "verifier", tier=2, scopes=("search", "llm"))])
    assert await v.tick() and reads.total() == 4 * FIXES + 2
    # an op applied that the verifier was not told of: every fix again
    r.ingest(kb.report("agent", service="search", operation="op0"), verified=True)
    assert await v.tick() and reads.total() == 6 * FIXES + 2
    assert not await v.tick() and v.passes == 4


async def test_a_waiting_fix_is_judged_when_its_pattern_and_its_evidence_arrive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fix whose pattern is unknown waits; a senior verifier then waits for fleet
    evidence. Unrelated reports read nothing; the pattern's first report, then
    outcomes from enough agents, bring it back."""
    kb = KB()
    r, _ = accepted_fixes(kb)
    for name in ("a1", "a2", "a3"):
        kb.grant("admin", name, "member")
        kb.sync("admin", name)
    report = sample_report(service="search", operation="late")
    fix = kb.propose("agent", report["pattern"], sample_recipe("search.late"), "low")
    reads = Reads(monkeypatch)
    written: list[tuple[str, dict[str, Any]]] = []

    async def write(kind: str, body: dict[str, Any]) -> None:
        written.append((kind, body))
        noted(r, v, [kb.write("v1", kind, body)])

    v = Verifier(r, kb.key("v1"), write)
    noted(r, v, kb.ops[len(r.meta) :])  # the grants and the proposal
    assert await v.tick() and written == [] and v.stats.waiting == 0  # no pattern yet
    before = reads.total()
    noted(r, v, [kb.report("agent", service="search", operation="op1")])
    assert not await v.tick() and reads.total() == before
    noted(r, v, [kb.write("agent", "pattern.report", report)])
    assert await v.tick() and v.stats.waiting == 1 and written == []  # fleet evidence
    assert reads.total() == before + 2
    for name in ("a1", "a2", "a3"):
        body = {"fix": fix, "attempts": 100, "successes": 99, "window": [0, 1]}
        noted(r, v, [kb.write(name, "fix.outcome", body)])
    assert await v.tick()
    assert [(k, b["fix"], b["verdict"]) for k, b in written] == [("fix.attest", fix, "accept")]


async def test_a_failed_write_is_tried_again_at_the_next_tick_with_nothing_new() -> None:
    kb = KB()
    r, fixes = accepted_fixes(kb)
    for name in ("a1", "a2", "a3"):
        kb.grant("admin", name, "member")
        kb.sync("admin", name)
    fails = [StoreError("database is locked")] * 2
    written: list[str] = []

    async def write(kind: str, body: dict[str, Any]) -> None:
        if fails:
            raise fails.pop()
        written.append(kind)
        noted(r, v, [kb.write("v1", kind, body)])

    v = Verifier(r, kb.key("v1"), write, revoke_window_s=0)  # revokes on the totals
    for fix in fixes[:2]:  # two fixes stop working
        for name in ("a1", "a2", "a3"):
            body = {"fix": fix, "attempts": 100, "successes": 1, "window": [0, 1]}
            kb.write(name, "fix.outcome", body)
    noted(r, v, kb.ops[len(r.meta) :])
    for _ in range(3):  # the first revoke fails twice: it is tried at each tick
        assert await v.tick()
    assert written == ["fix.revoke", "fix.revoke"] and v.stats.revoked == 2
    assert await v.tick()  # the fix its own last revoke changed
    assert not await v.tick() and written == ["fix.revoke", "fix.revoke"]


SCOPES = (("search", "query"), ("search", "lookup"), ("llm", "complete"))


def verifier_step(h: History, rng: random.Random) -> None:
    """What a verifier's decisions turn on: first and later reports of patterns,
    proposals (some before their pattern, some for another scope), fleet outcomes
    good and bad; and, a quarter of the time, a step of the random history
    (grants, revokes, equivocations, goals, other verifiers' attestations)."""
    kb, roll = h.kb, rng.random()
    who = rng.choice(h.AUTHORS)
    svc, op = rng.choice(SCOPES)
    try:
        if roll < 0.25:
            kb.report(who, service=svc, operation=op, count=rng.randint(1, 3))
        elif roll < 0.45:
            pattern = sample_report(service=svc, operation=op)["pattern"]
            scope = f"{svc}.{op}" if rng.random() < 0.9 else svc
            recipe = sample_recipe(scope, rng.randint(2, 4), idempotent=rng.random() < 0.5)
            h.fixes.append((kb.propose(who, pattern, recipe), svc))
        elif roll < 0.75 and h.fixes:
            fix, _ = rng.choice(h.fixes)
            good = rng.random() < 0.5
            successes = rng.randint(45, 50) if good else rng.randint(0, 10)
            body = {"fix": fix, "attempts": 50, "successes": successes, "window": [0, 1]}
            kb.write(who, "fix.outcome", body)
        else:
            h.step()
    except InvalidOp:  # e.g. an author the history revoked
        pass


async def stream_decisions(seed: int, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], Reads]:
    """A random history delivered in small batches to two verifiers with the same
    grants: ``old`` passes over every fix whenever the replica changed (the old
    loop), ``new`` ticks on what it was told of. Their decisions, per batch."""
    h = History(seed, steps=0)
    kb, rng = h.kb, random.Random(seed)
    for name in ("old", "new"):
        kb.grant("admin", name, "verifier", tier=1, scopes=("search",))
    mine = {kb.key("old"), kb.key("new")}
    reps = {name: kb.replica(name) for name in ("old", "new")}
    made: dict[str, list[tuple[int, str, bytes, str]]] = {"old": [], "new": []}
    step = 0

    def writer(name: str) -> Any:
        async def write(kind: str, body: dict[str, Any]) -> None:
            made[name].append((step, kind, body["fix"], body.get("verdict", "")))
            op = kb.write(name, kind, body)
            if name == "new":
                verifiers["new"].note([op])

        return write

    verifiers = {  # revoke on the totals: what a pass decides, not when a revoke confirms
        name: Verifier(reps[name], kb.key(name), writer(name), revoke_window_s=0) for name in reps
    }
    reads = Reads(monkeypatch)
    fed, mark = 0, None
    for step in range(120):
        if step == 60:  # my roles change midway: tier 2 (fleet evidence, revokes), any scope
            with contextlib.suppress(InvalidOp):  # (unless the history revoked the admin)
                for name in ("old", "new"):
                    kb.grant("admin", name, "verifier", tier=2, scopes=("*",))
        for _ in range(rng.randint(1, 4)):
            verifier_step(h, rng)
        batch = [op for op in kb.ops[fed:] if op.author not in mine]
        fed = len(kb.ops)
        old, new = verifiers["old"], verifiers["new"]
        for op in batch:
            reps["old"].ingest(op, verified=True)
        noted(reps["new"], new, batch)
        reads.current = "old"
        if (len(reps["old"].meta), reps["old"].recomputes) != mark:  # the old loop
            mark = (len(reps["old"].meta), reps["old"].recomputes)
            for row in old.pending():
                await old.judge(row)
            await old.watch_outcomes()
        reads.current = "new"
        await new.tick()
    return [sorted(made["old"]), sorted(made["new"])], reads


async def test_incremental_passes_decide_as_full_passes_over_random_histories(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same decisions (attest accept or reject, revoke), at the same batch."""
    kinds: list[str] = []
    for seed in range(1, 7):
        (old, new), reads = await stream_decisions(seed, monkeypatch)
        assert new == old, seed
        assert reads.by["new"] < reads.by["old"]
        kinds += [kind + verdict for _, kind, _, verdict in old]
    assert {"fix.attestaccept", "fix.attestreject", "fix.revoke"} <= set(kinds)


async def test_a_verifier_whose_key_equivocated_tries_no_write_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A verifier whose own key equivocated signs nothing more (``Replica.create``
    refuses: ``equivocating``, for good). It judged every fix waiting for it, failed
    the write and logged a warning, then did it all again at every 0.5 s tick,
    forever: the failed fixes were kept to try again (``_retry``)."""
    kb = KB()
    r, fixes = accepted_fixes(kb)
    for name in ("a1", "a2", "a3"):
        kb.grant("admin", name, "member")
        kb.sync("admin", name)
    for fix in fixes[:2]:  # two accepted fixes stop working: v1 would revoke them
        for name in ("a1", "a2", "a3"):
            body = {"fix": fix, "attempts": 100, "successes": 1, "window": [0, 1]}
            kb.write(name, "fix.outcome", body)
    report = sample_report(service="search", operation="late")
    kb.write("agent", "pattern.report", report)
    kb.propose("agent", report["pattern"], sample_recipe("search.late"), "low")  # to judge
    # v1's key signs two different ops with one seq: it is an equivocator
    kb.write("v1", "pattern.report", sample_report(service="search", operation="x"))
    first = kb.write("v1", "pattern.report", sample_report(service="search", operation="x"))
    fork = kb.forge("v1", "pattern.report", sample_report(count=3), seq=first.seq)
    tries: list[str] = []

    async def write(kind: str, body: dict[str, Any]) -> None:
        tries.append(kind)
        r.create(kb.identity("v1"), kind, body, 1)  # what Node.write does first

    v = Verifier(r, kb.key("v1"), write)
    noted(r, v, [*kb.ops[len(r.meta) :], fork])
    assert kb.key("v1") in r.membership.equivocators
    with pytest.raises(InvalidOp):
        r.create(kb.identity("v1"), "pattern.report", sample_report(count=5), 1)
    for _ in range(20):  # ten seconds of ticks with nothing new
        await v.tick()
    assert len(tries) <= 3, tries  # at most one try each, not one per tick
    warnings = [rec for rec in caplog.records if rec.levelname == "WARNING"]
    assert len(warnings) <= 3, [w.getMessage() for w in warnings]
