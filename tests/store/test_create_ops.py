"""Store.create_ops: each request of a group succeeds or fails alone, and memory
never holds an op the file does not (or the store says it is broken)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gossipmind.core.errors import EncodingError, GossipmindError, InvalidOp, StoreError
from gossipmind.core.ops import Op
from gossipmind.core.replica import Replica
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, sample_report


@pytest.fixture
def kb() -> KB:
    kb = KB(seed=6)
    kb.grant("admin", "agent", "member")
    return kb


def _store(kb: KB, path: Path) -> Store:
    store = Store.create(path, kb.genesis, synchronous="NORMAL")
    store.ingest(kb.ops[1:])
    return store


def _report(template: str, ts: int) -> tuple[str, dict[str, Any], int]:
    return ("pattern.report", sample_report(template=template), ts)


def test_an_unencodable_body_in_a_group_fails_alone_and_the_store_reopens(
    kb: KB, tmp_path: Path
) -> None:
    path = tmp_path / "kb.sqlite3"
    store = _store(kb, path)
    before = len(store.replica.meta)
    bad = sample_report(template="bad <*>")
    bad["count"] = 1.5  # floats are not canonical data: EncodingError
    not_verifier = ("fix.attest", kb.attest_body(bytes(32), "search"), 4)
    requests = [
        _report("good one <*>", 1),
        _report("good two <*>", 2),
        ("pattern.report", bad, 3),
        not_verifier,
        _report("good three <*>", 5),
    ]
    out = store.create_ops(kb.identity("agent"), requests)
    assert isinstance(out[2], EncodingError)
    assert isinstance(out[3], InvalidOp) and out[3].code == "not_verifier"
    good = [out[0], out[1], out[4]]
    assert all(isinstance(op, Op) for op in good)
    assert [op.seq for op in good if isinstance(op, Op)] == [1, 2, 3]  # no seq skipped
    assert store.broken is None
    assert len(store.replica.meta) == before + 3
    # the next write builds on the three, as a node's next write would
    after = store.create_op(kb.identity("agent"), *_report("after <*>", 6))
    assert after.seq == 4
    root = store.replica.root()
    store.close()
    with Store.open(path) as again:  # raised "holds an invalid op" before the fix
        assert again.replica.root() == root
        assert all(again.raw(op.id) == op.raw for op in [*good, after] if isinstance(op, Op))


def test_create_op_raises_the_error_of_its_own_request(kb: KB, tmp_path: Path) -> None:
    store = _store(kb, tmp_path / "kb.sqlite3")
    bad = sample_report()
    bad["count"] = 0.5
    with pytest.raises(EncodingError, match="float"):
        store.create_op(kb.identity("agent"), "pattern.report", bad, 1)
    assert store.broken is None
    assert kb.identity("agent").public not in store.replica.last_seq
    store.close()


def test_a_failure_after_ops_were_applied_in_memory_breaks_the_store(
    kb: KB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net: an error that escapes once the replica applied a request
    (a bug) marks the store broken rather than letting memory and file diverge."""
    path = tmp_path / "kb.sqlite3"
    store = _store(kb, path)
    root = store.replica.root()
    real = Replica._commit
    calls = 0

    def commit_then_fail(self: Replica, op: Op, mset: int) -> None:
        nonlocal calls
        calls += 1
        real(self, op, mset)
        if calls == 2:
            raise GossipmindError("a bug half-way through applying an op")

    monkeypatch.setattr(Replica, "_commit", commit_then_fail)
    requests = [_report("one <*>", 1), _report("two <*>", 2), _report("three <*>", 3)]
    with pytest.raises(StoreError, match="half-way"):
        store.create_ops(kb.identity("agent"), requests)
    assert store.broken is not None
    with pytest.raises(StoreError, match="unusable"):
        store.create_ops(kb.identity("agent"), [_report("four <*>", 4)])
    monkeypatch.undo()
    store.close()
    with Store.open(path) as again:  # the file is as before the group
        assert again.replica.root() == root


def test_an_unexpected_error_after_earlier_requests_applied_breaks_the_store(
    kb: KB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kb.sqlite3"
    store = _store(kb, path)
    root = store.replica.root()
    real = Replica.create

    def create(self: Replica, identity: Any, kind: str, body: dict[str, Any], ts: int) -> Op:
        if ts == 2:
            raise RuntimeError("a bug before anything of this request was applied")
        return real(self, identity, kind, body, ts)

    monkeypatch.setattr(Replica, "create", create)
    with pytest.raises(StoreError, match="RuntimeError"):
        store.create_ops(kb.identity("agent"), [_report("one <*>", 1), _report("two <*>", 2)])
    assert store.broken is not None
    monkeypatch.undo()
    store.close()
    with Store.open(path) as again:
        assert again.replica.root() == root
