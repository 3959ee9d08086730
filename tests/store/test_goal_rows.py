"""A goal op rewrites only the fix rows it can change (protocol.md §6.6).

A `goal.set` or `goal.review` used to rewrite every fix row of the store: with
thousands of fixes, every goal op cost O(all fixes) row writes on every node.
A goal reaches only the fixes in its scope (before and after the change), and
among them only those whose violations or needed tier change — conflict
resolution included, since a new goal can change which of the others wins in
the overlap. The rows written must stay exactly the rows a full rebuild gives.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipmind.core import encoding
from gossipmind.core.ops import Op
from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import fix_rows, snapshot
from gossipmind.store.queries import Reader
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, sample_recipe, sample_report

NAMES = ("o1", "o2", "agent", "v1", "v2", "v3")
AT_MOST_3 = {"op": "<=", "field": "retry.max_attempts", "value": 3}
AT_LEAST_4 = {"op": ">=", "field": "retry.max_attempts", "value": 4}


def network(seed: int = 7) -> KB:
    kb = KB(seed=seed)
    for name in ("o1", "o2", "agent"):
        kb.grant("admin", name, "member")
    for tier in (1, 2, 3):
        kb.grant("admin", f"v{tier}", "verifier", tier=tier, scopes=("*",))
    for name in NAMES:
        kb.sync("admin", name)
    return kb


def up_to_date(kb: KB, who: str) -> None:
    for other in ("admin", *NAMES):
        if other != who:
            kb.sync(other, who)


def write(kb: KB, who: str, kind: str, body: dict[str, Any]) -> Op:
    up_to_date(kb, who)
    return kb.write(who, kind, body)


def recipe(
    scope: str, attempts: int, idempotent: bool = False, fallback: str | None = None
) -> dict[str, Any]:
    r = sample_recipe(scope, attempts, idempotent=idempotent)
    if fallback is not None:
        r["steps"].append({"type": "fallback", "target": fallback})
    return r


def fix(kb: KB, service: str, operation: str, r: dict[str, Any]) -> bytes:
    pattern = sample_report(service=service, operation=operation)["pattern"]
    up_to_date(kb, "agent")
    return kb.propose("agent", pattern, r)


def goal_body(scope: str, priority: int, *constraints: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": "g",
        "scope": scope,
        "priority": priority,
        "retired": False,
        "constraints": list(constraints),
    }


def review(version: Op, verdict: str = "approve") -> dict[str, Any]:
    return {
        "goal": version.body.get("goal", version.id),
        "version": version.id,
        "verdict": verdict,
        "comment": "",
    }


def stored(store: Store) -> list[tuple[Any, ...]]:
    return [tuple(x) for x in store.conn.execute("SELECT * FROM fixes ORDER BY fix")]


def rebuilt(kb: KB, ops: list[Op]) -> list[tuple[Any, ...]]:
    """The fix rows of a replica built from scratch from ``ops``, as the store holds them."""
    r = Replica(kb.genesis)
    for op in ops:
        r.ingest(op, verified=True)
    return [(x["fix"], x["pattern"], x["status"], encoding.encode(x)) for x in fix_rows(r)]


@contextmanager
def fix_writes(store: Store) -> Iterator[set[bytes]]:
    """The ids of the fix rows the store inserts, replaces or deletes in the block."""
    c = store.conn
    c.execute("CREATE TEMP TABLE IF NOT EXISTS written (fix BLOB)")
    c.execute("DELETE FROM written")
    for event, row in (("INSERT", "NEW"), ("DELETE", "OLD"), ("UPDATE", "NEW")):
        c.execute(
            f"CREATE TEMP TRIGGER IF NOT EXISTS written_{event.lower()} AFTER {event} "
            f"ON main.fixes BEGIN INSERT INTO written VALUES ({row}.fix); END"
        )
    out: set[bytes] = set()
    yield out
    out.update(bytes(f) for (f,) in c.execute("SELECT fix FROM written"))


class Net:
    """A network and a store that ingests each op as it is written."""

    def __init__(self, path: Path) -> None:
        self.kb = network()
        self.store = Store.create(path, self.kb.genesis)
        self.sent = 1
        self.flush()

    def flush(self) -> None:
        self.store.ingest(self.kb.ops[self.sent :], verified=True)
        self.sent = len(self.kb.ops)

    def write(self, who: str, kind: str, body: dict[str, Any]) -> tuple[Op, set[bytes]]:
        op = write(self.kb, who, kind, body)
        with fix_writes(self.store) as written:
            self.flush()
        return op, written

    def close(self) -> None:
        self.store.close()

    def status(self) -> dict[bytes, str]:
        return {bytes(f): s for f, s in self.store.conn.execute("SELECT fix, status FROM fixes")}

    def check(self) -> None:
        assert stored(self.store) == rebuilt(self.kb, self.kb.ops[1:])


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path / "kb.sqlite3")
    yield n
    n.close()


def test_a_goal_op_rewrites_only_the_fix_rows_it_changes(net: Net) -> None:
    n = net
    kb = n.kb
    three = fix(kb, "search", "query", recipe("search.query", 3))
    five = fix(kb, "search", "query", recipe("search.query", 5))
    other = fix(kb, "search", "other", recipe("search.other", 5))
    llm = fix(kb, "llm", "complete", recipe("llm.complete", 5))
    n.flush()
    g, written = n.write("o1", "goal.set", goal_body("search", 1, AT_MOST_3))
    assert written == set()  # not reviewed yet: no goal is active, no fix changes
    _, written = n.write("v2", "goal.review", review(g))
    assert written == {five, other}  # in scope and broken; not `three`, nor llm's fix
    assert n.status() == {three: "proposed", five: "blocked", other: "blocked", llm: "proposed"}
    n.check()
    # an update is a new version: inactive until reviewed, so it unblocks both
    g2, written = n.write("o1", "goal.set", {**goal_body("search.query", 1), "goal": g.id})
    assert written == {five, other}
    _, written = n.write("v2", "goal.review", review(g2))
    assert written == set()  # the active version breaks nothing
    n.check()
    _, written = n.write("o2", "goal.set", goal_body("*", 1, AT_MOST_3))
    assert written == set()
    n.check()


def test_a_goal_that_wins_a_conflict_rewrites_the_fixes_of_the_overlap(net: Net) -> None:
    """A new goal changes which goal wins where it overlaps an active one: the
    loser's constraint no longer counts there, so fixes it blocked there are
    rewritten — and the loser's fixes outside the overlap are not."""
    n = net
    kb = n.kb
    three = fix(kb, "search", "query", recipe("search.query", 3))
    five = fix(kb, "search", "query", recipe("search.query", 5))
    other = fix(kb, "search", "other", recipe("search.other", 5))
    llm = fix(kb, "llm", "complete", recipe("llm.complete", 5))
    low, _ = n.write("o1", "goal.set", goal_body("search", 1, AT_MOST_3))
    n.write("v2", "goal.review", review(low))
    assert n.status()[five] == "blocked" and n.status()[other] == "blocked"
    high, written = n.write("o2", "goal.set", goal_body("search.query", 2, AT_LEAST_4))
    assert written == set()
    _, written = n.write("v2", "goal.review", review(high))
    # in search.query the <= 3 is dropped and the >= 4 holds: both fixes there change
    assert written == {three, five}
    assert n.status() == {three: "blocked", five: "proposed", other: "blocked", llm: "proposed"}
    n.check()
    # the same at equal priority: both dropped in the overlap, a person must accept there
    tie, _ = n.write(
        "o2", "goal.set", {**goal_body("search.query", 1, AT_LEAST_4), "goal": high.id}
    )
    _, written = n.write("v3", "goal.review", review(tie))
    assert written == {three, five}  # no violation left there, but a person must accept
    rows = {bytes(f): encoding.decode(d) for f, _, _, d in stored(n.store)}
    assert rows[five]["quorum"]["tier"] == 3 and rows[other]["quorum"]["tier"] == 1
    n.check()
    # retiring the winner gives the loser back the overlap
    retire = {**goal_body("search.query", 1, AT_LEAST_4), "goal": high.id, "retired": True}
    ret, written = n.write("o2", "goal.set", retire)
    assert written == {three, five}
    n.write("v2", "goal.review", review(ret))
    assert n.status() == {three: "proposed", five: "blocked", other: "blocked", llm: "proposed"}
    n.check()


def test_a_goal_op_on_5000_fixes_writes_only_its_scope(net: Net) -> None:
    """The scalability case: 5 000 fixes over 10 services; a goal on one of them
    writes at most that service's 500 rows, and an unreviewed goal none."""
    n = net
    kb = n.kb
    up_to_date(kb, "agent")
    for i in range(5000):
        svc, op = f"s{i % 10}", f"op{i}"
        pattern = sample_report(service=svc, operation=op)["pattern"]
        kb.propose("agent", pattern, recipe(f"{svc}.{op}", 2 + i % 4))
    n.flush()
    g, written = n.write("o1", "goal.set", goal_body("s3", 1, AT_MOST_3))
    assert written == set()
    _, written = n.write("v2", "goal.review", review(g))
    assert len(written) == 250  # s3's fixes with max_attempts 4 or 5
    n.check()


GOAL = st.tuples(
    st.just("goal"),
    st.sampled_from(["o1", "o2"]),
    st.integers(0, 4),  # an existing goal to update, or a new one
    st.sampled_from(["*", "search", "search.query", "search.other", "llm", "llm.complete"]),
    st.integers(0, 2),
    st.lists(st.integers(0, 8), min_size=1, max_size=3),
    st.integers(0, 9),  # 0: retired
    st.sampled_from([None, "v2", "v3"]),  # who approves it at once, if anyone
)
# the owner's goal again at another priority: only which goal wins its conflicts changes
PRIORITY = st.tuples(st.just("priority"), st.integers(0, 4), st.integers(0, 2), st.booleans())
REVIEW = st.tuples(
    st.just("review"),
    st.integers(0, 3),  # the latest version, or one of the few before it
    st.sampled_from(["v2", "v3", "admin"]),
    st.sampled_from(["approve", "approve", "approve", "reject"]),
)
ACTIONS = st.one_of(
    GOAL,
    GOAL,
    PRIORITY,
    REVIEW,
    REVIEW,
    st.tuples(
        st.just("fix"),
        st.sampled_from(["search.query", "search.other", "llm.complete", "search"]),
        st.integers(2, 5),
        st.booleans(),
        st.sampled_from([None, "x", "y"]),
    ),
    st.tuples(st.just("report"), st.sampled_from(["search.query", "llm.complete"])),
    st.tuples(
        st.just("attest"),
        st.integers(0, 99),
        st.sampled_from(["v1", "v2", "v3"]),
        st.sampled_from(["accept", "accept", "reject"]),
    ),
)
MENU = [
    AT_MOST_3,
    AT_LEAST_4,
    {"op": "=", "field": "retry.max_attempts", "value": 2},
    {"op": "require_step", "step": "idempotency_key"},
    {"op": "forbid_step", "step": "idempotency_key"},
    {"op": "allowed_fallbacks", "targets": ["x"]},
    {"op": "allowed_fallbacks", "targets": ["y"]},
    {"op": "<=", "field": "budget_ms", "value": 5000},
    {"op": "require_step", "step": "fallback", "when": "retry"},
]
# fixes every history starts with, so that goal ops have rows to change
BASE: list[tuple[Any, ...]] = [
    ("report", "search.query"),
    ("report", "llm.complete"),
    *(
        ("fix", scope, attempts, keyed, fallback)
        for scope in ("search.query", "search.other", "llm.complete", "search")
        for attempts, keyed, fallback in ((3, True, "x"), (5, False, None), (2, False, "y"))
    ),
    ("attest", 0, "v1", "accept"),
    ("attest", 1, "v2", "accept"),
    ("attest", 6, "v3", "accept"),
]


def owner_of(kb: KB, op: Op) -> str:
    return next(name for name in NAMES if kb.key(name) == op.author)


def play(
    kb: KB, action: tuple[Any, ...], fixes: list[tuple[bytes, str]], versions: list[Op]
) -> None:
    kind = action[0]
    if kind == "fix":
        _, scope, attempts, keyed, fallback = action
        svc, _, op = scope.partition(".")
        pattern = sample_report(service=svc, operation=op or "query")["pattern"]
        up_to_date(kb, "agent")
        fid = kb.propose("agent", pattern, recipe(scope, attempts, keyed, fallback))
        fixes.append((fid, scope))
    elif kind == "report":
        svc, _, op = action[1].partition(".")
        write(kb, "agent", "pattern.report", sample_report(service=svc, operation=op))
    elif kind == "attest" and fixes:
        fid, scope = fixes[action[1] % len(fixes)]
        write(kb, action[2], "fix.attest", kb.attest_body(fid, scope, action[3]))
    elif kind == "goal":
        _, owner, target, scope, priority, picks, retired, reviewer = action
        body = goal_body(scope, priority, *(MENU[i] for i in picks))
        body["retired"] = retired == 0
        goals = [v for v in versions if "goal" not in v.body]
        if target < len(goals):
            body["goal"] = goals[target].id
        versions.append(write(kb, owner, "goal.set", body))
        if reviewer is not None:
            write(kb, reviewer, "goal.review", review(versions[-1]))
    elif kind == "priority" and versions:
        _, target, priority, approved = action
        goals = [v for v in versions if "goal" not in v.body]
        g = goals[target % len(goals)]
        last = [v for v in versions if v.author == g.author and v.body.get("goal", v.id) == g.id]
        body = {**last[-1].body, "goal": g.id, "priority": priority}
        versions.append(write(kb, owner_of(kb, g), "goal.set", body))
        if approved:
            write(kb, "v2", "goal.review", review(versions[-1]))
    elif kind == "review" and versions:
        version = versions[-1 - action[1] % len(versions)]
        write(kb, action[2], "goal.review", review(version, action[3]))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=st.lists(st.tuples(ACTIONS, st.booleans()), min_size=12, max_size=40))
def test_incremental_fix_rows_equal_a_full_rebuild(steps: list[tuple[Any, bool]]) -> None:
    """Goal ops (new goals, updates, retirements, reviews; conflicts at every
    priority) interleaved with fixes, reports and attestations, stored in
    batches: after every batch the stored fix rows are those of a replica built
    from scratch, and after a reopen too."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kb.sqlite3"
        kb = network()
        fixes: list[tuple[bytes, str]] = []
        versions: list[Op] = []
        with Store.create(path, kb.genesis) as store:
            sent = 1
            for action, flush in [*((a, False) for a in BASE), *steps[:-1], (steps[-1][0], True)]:
                play(kb, action, fixes, versions)
                if flush:
                    store.ingest(kb.ops[sent:], verified=True)
                    sent = len(kb.ops)
                    assert stored(store) == rebuilt(kb, kb.ops[1:])
            snap = snapshot(store.replica)
        with Store.open(path) as again, Reader(path) as reader:
            assert stored(again) == rebuilt(kb, kb.ops[1:])
            assert reader.fixes() == snap["fixes"] and reader.goals() == snap["goals"]
