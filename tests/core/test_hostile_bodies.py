"""Bodies anyone can sign: none may raise out of ingest, none may bloat the
record of rejected ops.

The schema is checked before the signature and before membership, so these
ops need no grant: a stranger's key signs them. A recipe step whose ``type``
was an array or a map raised ``TypeError`` (unhashable) out of
``Replica.ingest``, ``Store.ingest*`` and the node's gossip loop; and a
rejection's detail quoted the whole offending value (~60 KB for a 60 000
character ``risk``), kept for each of the 100 000 rejected ops recorded.
"""

from __future__ import annotations

import functools
import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gossipmind.core import encoding, errors, schema
from gossipmind.core import ops as opsmod
from gossipmind.core.errors import InvalidOp
from gossipmind.core.identity import Identity
from gossipmind.core.ops import Op
from gossipmind.core.replica import Replica, check_genesis
from gossipmind.core.schema import pattern_id
from gossipmind.store.queries import Reader
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, sample_recipe

STRANGER = Identity(b"\x07" * 32)  # a key nobody granted
MAX_DETAIL = 200  # the longest detail recorded with a rejected op (errors.MAX_DETAIL)
CONTAINERS: tuple[Any, ...] = ([], {}, ["x"], {"x": "y"})
# maps whose values are any canonical values (protocol.md §4): a container there is valid
ANY_VALUES = {("evidence",), ("drill", "model")}

EVERY_STEP = {
    "scope": "search",
    "budget_ms": 10_000,
    "steps": [
        {
            "type": "retry",
            "max_attempts": 3,
            "base_ms": 100,
            "cap_ms": 2000,
            "jitter": "full",
            "on": ["server_error", "timeout"],
        },
        {"type": "respect_retry_after", "max_wait_ms": 5000},
        {"type": "timeout", "ms": 1000},
        {"type": "idempotency_key", "header": "Idempotency-Key"},
        {"type": "set_param", "name": "region", "value": "eu"},
        {"type": "fallback", "target": "backup"},
        {"type": "circuit_breaker", "failure_threshold": 5, "reset_ms": 1000},
        {"type": "escalate", "to": "oncall"},
    ],
}


@functools.cache
def seeds() -> tuple[KB, tuple[Op, ...]]:
    """A valid op of every kind but the genesis, with a str in every str field."""
    kb = KB(seed=11)
    kb.grant("admin", "a", "member")
    kb.grant("admin", "v", "verifier", tier=2, scopes=("search",))
    kb.grant("admin", "t", "teacher")
    for name in ("a", "v", "t"):
        kb.sync("admin", name)
    kb.report("a", count=3, retry_after_ms=500)
    pat = pattern_id("search", "query", "timeout", "t")
    fix = kb.propose("a", pat, sample_recipe("search"))
    body = {
        "pattern": pat,
        "recipe": EVERY_STEP,
        "risk": "low",
        "rationale": "every step",
        "origin": "human",
        "synthesizer": "s",
        "drill": {
            "runs": 10,
            "success_bp": 9000,
            "baseline_success_bp": 1000,
            "amplification_pm": 1500,
            "added_latency_ms": 5,
            "model": {"kind": "x"},
        },
    }
    kb.write("t", "fix.propose", body)
    kb.sync("a", "v")
    attest = kb.attest_body(fix, "search") | {"reasons": ["ok"], "evidence": {"e": "x"}}
    kb.write("v", "fix.attest", attest)
    kb.write("a", "fix.outcome", {"fix": fix, "attempts": 3, "successes": 2, "window": [0, 5]})
    constraints = [
        {"op": "<=", "field": "retry.max_attempts", "value": 4},
        {"op": "=", "field": "set_param.value", "value": "eu"},
        {"op": "require_step", "step": "timeout", "when": "retry"},
        {"op": "forbid_step", "step": "escalate"},
        {"op": "allowed_fallbacks", "targets": ["backup"]},
    ]
    goal = kb.write(
        "a",
        "goal.set",
        {
            "title": "g",
            "scope": "search",
            "priority": 5,
            "retired": False,
            "constraints": constraints,
            "description": "d",
        },
    )
    kb.sync("a", "v")
    review = {"goal": goal.id, "version": goal.id, "verdict": "approve", "comment": "ok"}
    kb.write("v", "goal.review", review)
    kb.sync("v", "admin")
    kb.write("admin", "fix.revoke", {"fix": fix, "scope": "search", "reason": "r"})
    kb.revoke("admin", "t")
    return kb, tuple(kb.ops[1:])


def str_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths to every str value in ``value`` outside the any-values maps."""
    if tuple(p for p in path if isinstance(p, str)) in ANY_VALUES:
        return
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from str_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from str_paths(v, (*path, i))


def replaced(body: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    if isinstance(body, dict):
        return {k: replaced(v, path[1:], new) if k == path[0] else v for k, v in body.items()}
    return [replaced(v, path[1:], new) if i == path[0] else v for i, v in enumerate(body)]


def signed(net: bytes, kind: str, body: dict[str, Any], ts: int = 0) -> Op:
    """``body`` signed by the stranger: valid envelope and signature, schema unchecked."""
    return opsmod.create(
        STRANGER, net=net, kind=kind, seq=1, lamport=2, deps=[net], ts=ts, body=body
    )


@functools.cache
def containers_where_a_str_is_expected() -> tuple[Op, ...]:
    kb, ops = seeds()
    out = []
    for op in ops:
        for path in str_paths(op.body):
            for c in CONTAINERS:
                out.append(signed(kb.net, op.kind, replaced(op.body, path, c)))
    return tuple(out)


def test_the_seeds_are_valid_and_cover_every_kind_and_step_type() -> None:
    kb, ops = seeds()
    r = Replica(kb.genesis)
    for op in ops:
        assert r.ingest(op).applied
    assert {op.kind for op in ops} == set(opsmod.KINDS) - {"net.genesis"}
    mutants = containers_where_a_str_is_expected()
    assert len(mutants) == 256  # 64 str fields, 4 containers each
    step_types = [p for op in ops for p in str_paths(op.body) if p[-1:] == ("type",)]
    assert len(step_types) == 1 + len(EVERY_STEP["steps"])  # sample_recipe's retry, and all 8


def test_a_container_where_a_str_is_expected_is_a_schema_rejection() -> None:
    kb, ops = seeds()
    r = Replica(kb.genesis)
    for op in ops:
        r.ingest(op)
    root = r.root()
    for bad in containers_where_a_str_is_expected():
        result = r.ingest_raw(bad.raw)
        assert not result.applied and not result.pending
        assert [(oid, code) for oid, code, _ in result.rejected] == [(bad.id, "schema")]
    assert r.root() == root


def test_a_step_type_that_is_an_array_or_a_map_names_the_field() -> None:
    kb, _ = seeds()
    r = Replica(kb.genesis)
    for t in ([], {}, [[]], {"retry": 1}):
        body = {
            "pattern": pattern_id("s", "o", "timeout", "t"),
            "risk": "low",
            "rationale": "",
            "origin": "synth",
            "recipe": {"scope": "s", "steps": [{"type": t}]},
        }
        (rejected,) = r.ingest_raw(signed(kb.net, "fix.propose", body).raw).rejected
        assert rejected[1] == "schema"
        assert rejected[2].startswith("recipe.steps[0].type: unknown step type")


def test_the_store_rejects_them_and_keeps_what_came_with_them(tmp_path: Path) -> None:
    """One batch: a valid op, then every mutant (as a gossip message or a sync
    batch brings them). The valid op is durable; nothing else is applied; the
    store stays usable."""
    kb, ops = seeds()
    path = tmp_path / "kb.sqlite3"
    mutants = containers_where_a_str_is_expected()
    with Store.create(path, kb.genesis, synchronous="OFF") as store:
        result = store.ingest_raw([ops[0].raw, *(m.raw for m in mutants)])
        assert [op.id for op in result.applied] == [ops[0].id]
        assert {code for _, code, _ in result.rejected} == {"schema"}
        assert len(result.rejected) == len(mutants)
        assert store.broken is None
        assert store.ingest_raw([op.raw for op in ops[1:]]).applied  # still usable
    with Store.open(path) as store:
        assert all(op.id in store.replica.meta for op in ops)
        assert all(store.replica.rejected[m.id][0] == "schema" for m in mutants)


def test_a_local_write_of_such_a_body_is_refused_alone(tmp_path: Path) -> None:
    """A commit group (POST /v1/ops): an honest write, then a malformed one. The
    malformed one is refused with `schema`; the honest one is applied and durable,
    and the store is not marked broken."""
    kb, _ = seeds()
    path = tmp_path / "kb.sqlite3"
    bad = {
        "pattern": pattern_id("s", "o", "timeout", "t"),
        "risk": "low",
        "rationale": "",
        "origin": "synth",
        "recipe": {"scope": "s", "steps": [{"type": []}]},
    }
    with Store.create(path, kb.genesis, synchronous="OFF") as store:
        honest = ("member.grant", {"member": kb.key("z"), "role": "member"}, 5)
        out = store.create_ops(kb.identity("admin"), [honest, ("fix.propose", bad, 6)])
        assert isinstance(out[0], Op)
        assert isinstance(out[1], InvalidOp) and out[1].code == "schema"
        assert store.broken is None
        granted = out[0].id
    with Store.open(path) as store:
        assert granted in store.replica.meta


def test_any_other_exception_from_a_body_check_is_a_schema_rejection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net: whatever a check raises on a body (here a stand-in for a
    bug), the op is rejected with `schema`; nothing escapes ingest or the genesis
    check."""

    def broken_check(body: dict[str, Any]) -> None:
        raise KeyError("a bug")

    kb, ops = seeds()
    report = next(op for op in ops if op.kind == "pattern.report")
    bad = signed(kb.net, "pattern.report", report.body, ts=99)
    monkeypatch.setitem(schema._CHECKS, "pattern.report", broken_check)
    with Store.create(tmp_path / "kb.sqlite3", kb.genesis, synchronous="OFF") as store:
        result = store.ingest_raw([ops[0].raw, bad.raw])
        assert [op.id for op in result.applied] == [ops[0].id]
        ((oid, code, detail),) = result.rejected
        assert (oid, code) == (bad.id, "schema")
        assert "pattern.report body cannot be checked: KeyError" in detail
        assert store.broken is None
    monkeypatch.setitem(schema._CHECKS, "net.genesis", broken_check)
    with pytest.raises(InvalidOp) as caught:
        check_genesis(kb.genesis)
    assert caught.value.code == "schema"


# -- the detail recorded with a rejected op --------------------------------------------


def long_values(net: bytes, n: int, long: str = "x" * 60_000) -> Iterator[bytes]:
    """Signed ops whose rejection used to quote a ~60 KB value (``long``)."""
    pat = pattern_id("s", "o", "timeout", "t")
    propose = {
        "pattern": pat,
        "recipe": sample_recipe("s"),
        "risk": long,
        "rationale": "",
        "origin": "synth",
    }
    for i in range(n):
        yield signed(net, "fix.propose", propose | {"rationale": str(i)}).raw
    yield signed(net, "fix.propose", propose | {"risk": "low", long: 1}).raw  # unknown field
    steps = [{"type": long}]
    yield signed(
        net, "fix.propose", propose | {"risk": "low", "recipe": {"scope": "s", "steps": steps}}
    ).raw
    yield signed(net, "fix.propose", propose | {"risk": "low", "origin": long}).raw
    envelope = encoding.encode([1, net, long, STRANGER.public, 1, 2, [net], 0, {}, b"\x00" * 64])
    yield envelope  # an unknown kind (decode)


def test_rejection_details_are_capped_in_memory_and_on_disk(tmp_path: Path) -> None:
    kb, _ = seeds()
    raws = list(long_values(kb.net, 20))
    path = tmp_path / "kb.sqlite3"
    with Store.create(path, kb.genesis, synchronous="OFF") as store:
        result = store.ingest_raw(raws)
        assert len(result.rejected) == len(raws)
        assert {code for _, code, _ in result.rejected} == {"schema", "unknown_kind"}
        assert max(len(d) for _, _, d in result.rejected) <= MAX_DETAIL
        assert max(len(d) for _, d in store.replica.rejected.values()) <= MAX_DETAIL
    with Reader(path) as reader:
        stored = reader.rejected(limit=1000)
    assert len(stored) == len(raws)
    assert max(len(row["detail"]) for row in stored) <= MAX_DETAIL
    risk = next(row["detail"] for row in stored if row["detail"].startswith("risk:"))
    assert risk.startswith("risk: must be one of low, medium, high; got 'xxx")
    assert len(risk) < 200


def test_a_long_detail_from_an_older_store_is_capped_when_read(tmp_path: Path) -> None:
    kb, _ = seeds()
    path = tmp_path / "kb.sqlite3"
    Store.create(path, kb.genesis, synchronous="OFF").close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO rejected (id, code, detail) VALUES (?, ?, ?)",
            (b"\x01" * 32, "schema", "risk: got '" + "x" * 60_000 + "'"),
        )
    conn.close()
    with Store.open(path) as store:
        code, detail = store.replica.rejected[b"\x01" * 32]
    assert code == "schema" and len(detail) == MAX_DETAIL and detail.endswith("x...")


@pytest.mark.parametrize("long", ["x" * 60_000, "\U0001f600" * 15_000], ids=["ascii", "emoji"])
def test_a_rejected_op_costs_under_a_kibibyte_of_memory(long: str) -> None:
    """1 000 rejected 60 KB ops grew a replica by 57.5 MiB (58.9 KiB each: at the
    100 000-entry bound, ~5.6 GiB). Now each entry holds at most 200 ASCII
    characters."""
    kb, _ = seeds()
    raws = list(long_values(kb.net, 1000, long))[:1000]  # the 60 KB risks
    r = Replica(kb.genesis)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for raw in raws:
            r.ingest_raw(raw)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(r.rejected) == len(raws)
    assert grown / len(raws) < 1024, grown / len(raws)


def test_cap_keeps_short_details_whole() -> None:
    assert errors.MAX_DETAIL == MAX_DETAIL
    assert InvalidOp("schema", "risk: is required").detail == "risk: is required"
    exact = "x" * MAX_DETAIL
    assert InvalidOp("schema", exact).detail == exact
    cut = InvalidOp("schema", exact + "y").detail
    assert len(cut) == MAX_DETAIL and cut == "x" * (MAX_DETAIL - 3) + "..."
    assert str(InvalidOp("schema", exact + "y")) == f"schema: {cut}"
    wide = InvalidOp("schema", "got '" + "\U0001f600" * 300 + "'").detail  # 4 bytes a char
    assert wide.isascii() and len(wide) == MAX_DETAIL
    assert wide.startswith("got '\\U0001f600\\U0001f600")
