"""The learner after the node review: a proposal refused because this key is not a
member yet is tried again once the membership changes, and an idle tick costs what
changed since the last one, not every fix and pattern the replica holds."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from gossipmind.core.errors import InvalidOp
from gossipmind.core.fold import FixAgg
from gossipmind.core.ops import Op
from gossipmind.core.policy import Policy
from gossipmind.core.replica import Replica
from gossipmind.core.schema import pattern_id
from gossipmind.core.snapshot import fix_row, pattern_row
from gossipmind.learn.patterns import Failure
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.learner import Learner
from gossipmind.node.node import Node, open_node
from gossipmind.store.datadir import DataDir, dump_genesis
from gossipmind.store.keyfile import new_identity, write_key
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB
from gossipmind.testing.kb import sample_recipe
from gossipmind.testnet.setup import prepare


def timeout_failure(i: int, template: str = "shoes") -> Failure:
    return Failure(
        service="search",
        operation="query",
        exc_type="httpx.ReadTimeout",
        status=504,
        message=f"GET /v1/search?q={template} timed out after {3000 + i} ms",
        context={"page": i},
        latency_ms=3000 + i,
    )


def rate_limited(i: int) -> Failure:
    return Failure(
        service="search",
        operation="query",
        exc_type="httpx.HTTPStatusError",
        status=429,
        message=f"429 Too Many Requests {i}",
        context={},
        latency_ms=20,
        retry_after_ms=1000,
    )


def proposals_for(node: Node, pattern: bytes) -> list[FixAgg]:
    return [
        f for f in node.store.replica.fold.fixes.values() if f.pattern == pattern and f.proposals
    ]


# -- finding 2: a not_member refusal is not for good ---------------------------------


async def test_a_learner_refused_not_member_proposes_once_its_grant_arrives(
    tmp_path: Path,
) -> None:
    """operations.md §6's order: start the node, let it sync, then be granted. The
    pattern that crossed the threshold before the grant gets its proposal after it."""
    specs = prepare(tmp_path, 3, 0, policy=Policy(open_membership=False))  # admin, a, b
    newdir = DataDir(tmp_path / "newcomer")
    newdir.ensure()
    ident = new_identity()
    write_key(newdir.key, ident)
    net = FakeNetwork(seed=1)
    async with AsyncExitStack() as stack:
        nodes = []
        for s in specs:
            cfg = NodeConfig(
                data_dir=s.dir,
                sync_interval=0.3,
                synchronous="NORMAL",
                learn=False,
                report_window_ms=100,
            )
            nodes.append(await stack.enter_async_context(open_node(cfg, fake=net)))
        cfg = NodeConfig(
            data_dir=newdir.root,
            genesis_file=tmp_path / "genesis.json",
            sync_interval=0.3,
            synchronous="NORMAL",
            learn=True,
            idle_s=0.2,
            report_window_ms=100,
        )
        newcomer = await stack.enter_async_context(open_node(cfg, fake=net))
        for n in [*nodes[1:], newcomer]:
            await n.transport.connect(nodes[0].transport.addrs()[0])
        admin, a, b = nodes
        learner = newcomer.learner
        before = a.report_failure(timeout_failure(1)).pattern
        b.report_failure(timeout_failure(2))
        with trio.move_on_after(30):
            while learner.stats.refused == 0:
                await trio.sleep(0.05)
        seen = newcomer.store.replica.fold.patterns.get(before)
        state = (learner.stats, seen and seen.reporters, newcomer.transport.peers())
        assert "not_member" in learner.stats.last_error, state
        drilled = learner.stats.drilled
        rounds = learner.stats.rounds
        with trio.fail_after(20):  # several idle rounds while still not a member
            while learner.stats.rounds < rounds + 4:
                await trio.sleep(0.05)
        assert learner.stats.drilled == drilled  # it waits: no drill a round meanwhile
        assert proposals_for(newcomer, before) == []

        await admin.write(
            "member.grant", {"member": ident.public, "role": "member", "name": "newcomer"}
        )
        with trio.fail_after(20):
            while not newcomer.store.replica.roles(ident.public).roles:
                await trio.sleep(0.05)
        with trio.move_on_after(20):  # the old learner never proposed it: bounded wait
            while not proposals_for(newcomer, before):
                await trio.sleep(0.05)
        authors = {
            p["author"] for f in proposals_for(newcomer, before) for p in f.proposals.values()
        }
        assert authors == {ident.public}, "the pattern due before the grant got no proposal"
        assert learner.stats.proposed >= 1 and learner.stats.waiting_membership is False
        # and a pattern crossing the threshold after the grant is learned as before
        after = a.report_failure(rate_limited(1)).pattern
        b.report_failure(rate_limited(2))
        with trio.fail_after(20):
            while not proposals_for(newcomer, after):
                await trio.sleep(0.05)


@pytest.fixture
def due_kb() -> KB:
    """Two members reported the same failure; "c" is not a member (closed network)."""
    kb = KB(seed=9, policy=Policy(open_membership=False))
    for name in ("a", "b"):
        kb.grant("admin", name, "member")
        kb.sync("admin", name)
    kb.sync("admin", "c")
    for name in ("a", "b"):
        kb.report(name, status="504")
        kb.sync(name, "c")
    return kb


async def test_a_learner_refused_not_member_waits_for_a_membership_change(
    due_kb: KB, autojump_clock: trio.testing.MockClock
) -> None:
    kb = due_kb
    writes: list[str] = []

    async def write(kind: str, body: dict[str, Any]) -> None:
        if not kb.replica("c").roles(kb.key("c")).roles:
            raise InvalidOp("not_member", "fix.propose requires membership (a member.grant)")
        writes.append(kind)

    learner = Learner(kb.replica("c"), write, idle_s=0.0, cpu_budget=1.0)
    assert await learner.round() == 0
    assert learner.stats.refused == 1 and learner.stats.drilled == 1
    assert len(learner.due()) == 1  # still due, not done for good
    assert learner.stats.waiting_membership
    for _ in range(4):  # nothing changed: no drill, no write
        assert await learner.round() == 0
    assert learner.stats.drilled == 1 and writes == []
    kb.report("a", status="504")  # an op that is not about membership changes nothing
    kb.sync("a", "c")
    assert await learner.round() == 0 and learner.stats.drilled == 1
    kb.grant("admin", "c", "member")
    kb.sync("admin", "c")
    assert await learner.round() >= 1
    assert writes and set(writes) == {"fix.propose"}
    assert (learner.stats.waiting_membership, learner.due()) == (False, [])


# -- finding 3: an idle tick costs what changed ----------------------------------------


class Counter:
    """Rows of ``fold.patterns`` and ``fold.fixes`` read, and fix views made, while on."""

    def __init__(self) -> None:
        self.on = False
        self.rows = 0
        self.views = 0

    def add(self, n: int) -> None:
        if self.on:
            self.rows += n


class CountingDict(dict[bytes, Any]):
    counter: Counter

    def __iter__(self) -> Iterator[bytes]:
        self.counter.add(len(self))
        return super().__iter__()

    def keys(self) -> Any:
        self.counter.add(len(self))
        return super().keys()

    def values(self) -> Any:
        self.counter.add(len(self))
        return super().values()

    def items(self) -> Any:
        self.counter.add(len(self))
        return super().items()

    def get(self, key: bytes, default: Any = None) -> Any:
        self.counter.add(1)
        return super().get(key, default)

    def __getitem__(self, key: bytes) -> Any:
        self.counter.add(1)
        return super().__getitem__(key)


def count_learner_reads(node: Node) -> Counter:
    """Count what the learner's rounds read of the replica to find the patterns
    due (only inside in_turn())."""
    counter = Counter()
    fold = node.store.replica.fold
    for name in ("patterns", "fixes"):
        d = CountingDict(getattr(fold, name))
        d.counter = counter
        setattr(fold, name, d)
    view = fold.fix_view

    def counted_view(f: FixAgg) -> FixAgg:
        if counter.on:
            counter.views += 1
        return view(f)

    fold.fix_view = counted_view  # type: ignore[method-assign]
    learner = node.learner
    in_turn = learner.in_turn  # what a round calls: due() and the proposing turns

    def counted_in_turn() -> list[dict[str, Any]]:
        counter.on = True
        try:
            return in_turn()
        finally:
            counter.on = False

    learner.in_turn = counted_in_turn  # type: ignore[method-assign]
    return counter


N_FIXES = 800


def build_store(root: Path) -> tuple[Path, KB]:
    """A store with N_FIXES patterns (one reporter each: none due) and a fix for each."""
    kb = KB(seed=1)
    kb.grant("admin", "a", "member")
    kb.grant("admin", "b", "member")
    kb.grant("admin", "v", "member")
    for n in ("a", "b", "v"):
        kb.sync("admin", n)
    for i in range(N_FIXES):
        tmpl = f"request {i} timed out after <*> ms"
        kb.report("a", template=tmpl)
        kb.propose("a", pattern_id("search", "query", "timeout", tmpl), sample_recipe())
    kb.sync("a", "b")
    d = DataDir(root / "v")
    d.ensure()
    write_key(d.key, kb.identity("v"))
    with Store.create(d.store, kb.genesis, synchronous="NORMAL") as st:
        st.ingest(kb.ops[1:], verified=True)
    d.genesis.write_text(dump_genesis(kb.genesis))
    return d.root, kb


async def wait_rounds(node: Node, n: int) -> None:
    start = node.learner.stats.rounds
    with trio.fail_after(30):
        while node.learner.stats.rounds < start + n:
            await trio.sleep(0.05)


async def test_an_idle_learner_reads_no_fix_and_no_pattern(tmp_path: Path) -> None:
    """A real node on a real store with 800 fixes and nothing due: the old tick read
    every fix (and made its view) and every pattern, each 0.5 s. Now an idle round
    reads nothing, and one new report costs a few rows."""
    ddir, kb = build_store(tmp_path)
    cfg = NodeConfig(data_dir=ddir, synchronous="NORMAL", learn=True, idle_s=0.2)
    async with open_node(cfg, fake=FakeNetwork(seed=1)) as node:
        await wait_rounds(node, 2)  # the first round looks at everything once
        counter = count_learner_reads(node)
        await wait_rounds(node, 4)
        # (fix views made, rows of patterns and fixes read) in 4 idle rounds
        assert (counter.views, counter.rows) == (0, 0)

        # one change: a second reporter puts one pattern over the threshold
        tmpl = "request 7 timed out after <*> ms"
        op: Op = kb.report("b", template=tmpl)
        result = node.ingest_ops([(op, True)])
        assert [o.id for o in result.applied] == [op.id]
        with trio.fail_after(30):
            while node.learner.stats.proposed == 0:
                await trio.sleep(0.05)
        await wait_rounds(node, 2)
        assert counter.rows <= 8 and counter.views <= 2, (counter.rows, counter.views)
        pid = pattern_id("search", "query", "timeout", tmpl)
        assert len(proposals_for(node, pid)) == 2  # a's and the learner's


# -- the kept state agrees with a full recomputation -----------------------------------


def reference_due(r: Replica) -> list[dict[str, Any]]:
    """The learner's old due(): every fix's row, then every pattern."""
    threshold = r.policy.synthesis_threshold
    accepted = {
        f.pattern
        for f in r.fold.fixes.values()
        if (row := fix_row(r, f)) is not None and row["status"] == "accepted"
    }
    rows = [
        pattern_row(p, threshold)
        for pid, p in r.fold.patterns.items()
        if pid not in accepted and p.reporters >= threshold
    ]
    return sorted(rows, key=lambda x: (-x["reporters"], -x["count"], x["pattern"]))


@pytest.mark.parametrize("seed", range(12))
def test_due_agrees_with_a_full_recomputation_after_every_change(seed: int) -> None:
    """Reports, proposals, attestations, fix revokes, goals that block fixes, member
    revokes (whole-set recomputations) and grants, applied to an observer in random
    batches: after each batch the learner's due() equals a recomputation from scratch."""
    rng = random.Random(seed)
    kb = KB(seed=seed)
    members, verifiers = ("a", "b", "c"), ("v", "w")
    for name in members:
        kb.grant("admin", name, "member")
    for name in verifiers:
        kb.grant("admin", name, "verifier", tier=2)
    everyone = (*members, *verifiers, "admin")
    for name in everyone:
        kb.sync("admin", name)
    obs = kb.replica("obs")
    learner = Learner(obs, kb_write_never, idle_s=0.0, cpu_budget=1.0)
    templates = [f"t{i}" for i in range(5)]
    fixes: list[bytes] = []
    goals: list[bytes] = []
    checked = 0
    for step in range(120):
        who = rng.choice(everyone)
        roll = rng.random()
        try:
            if roll < 0.35:
                kb.report(who, template=rng.choice(templates))
            elif roll < 0.5:
                pat = pattern_id("search", "query", "timeout", rng.choice(templates))
                recipe = sample_recipe("search.query", rng.randint(2, 5))
                fixes.append(kb.propose(who, pat, recipe))
            elif roll < 0.68 and fixes:
                verdict = rng.choice(["accept", "accept", "reject"])
                kb.write(
                    rng.choice(verifiers),
                    "fix.attest",
                    kb.attest_body(rng.choice(fixes), "search.query", verdict),
                )
            elif roll < 0.73 and fixes:
                body: dict[str, Any] = {
                    "fix": rng.choice(fixes),
                    "scope": "search.query",
                    "reason": "bad",
                }
                kb.write(rng.choice((*verifiers, "admin")), "fix.revoke", body)
            elif roll < 0.79:
                body = {
                    "title": "g",
                    "scope": "search",
                    "priority": 1,
                    "retired": rng.random() < 0.3,
                    "constraints": [{"op": "<=", "field": "retry.max_attempts", "value": 3}],
                }
                if goals and rng.random() < 0.5:
                    body["goal"] = rng.choice(goals)
                made = kb.write(who, "goal.set", body)
                if "goal" not in body:
                    goals.append(made.id)
            elif roll < 0.85 and goals:
                gid = rng.choice(goals)
                body = {"goal": gid, "version": gid, "verdict": "approve", "comment": ""}
                kb.write(who, "goal.review", body)
            elif roll < 0.89:
                kb.revoke("admin", rng.choice((*members, *verifiers)))
            elif roll < 0.93:
                name = rng.choice((*members, *verifiers))
                role = "verifier" if name in verifiers else "member"
                kb.grant("admin", name, role, tier=2)
            else:
                a, b = rng.sample(everyone, 2)
                kb.sync(a, b)
        except InvalidOp:
            pass  # e.g. a revoked author: nothing was written
        if rng.random() < 0.4 or step == 119:
            for name in everyone:
                kb.sync(name, "obs")
            assert learner.due() == reference_due(obs), f"step {step}"
            checked += 1
    assert checked >= 10
    assert obs.recomputes >= 1  # the random history did revoke someone


async def kb_write_never(kind: str, body: dict[str, Any]) -> None:  # pragma: no cover
    raise AssertionError("due() never writes")
