"""Group commit: concurrent writes share a transaction; each succeeds or fails alone;
nothing acknowledged is lost and nothing cancelled early is written."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
import trio.testing

from gossipmind.bench.catchup import build_history
from gossipmind.core.errors import EncodingError, GossipmindError, InvalidOp, StoreError
from gossipmind.core.ops import Op
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.node.writes import GroupCommit, Request
from gossipmind.store.datadir import DataDir
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, sample_report
from gossipmind.testnet.setup import prepare


@pytest.fixture
def kb() -> KB:
    kb = KB(seed=3)
    kb.grant("admin", "agent", "member")
    return kb


@pytest.fixture
def store(kb: KB, tmp_path: Path) -> Iterator[Store]:
    s = Store.create(tmp_path / "kb.sqlite3", kb.genesis, synchronous="NORMAL")
    s.ingest(kb.ops[1:])
    yield s
    s.close()


def count_commits(store: Store) -> list[str]:
    seen: list[str] = []
    store.conn.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
    return seen


def report(i: int) -> Request:
    return ("pattern.report", sample_report(template=f"group {i} <*>"), 1000 + i)


class Harness:
    def __init__(self, kb: KB, store: Store) -> None:
        self.after: list[list[Op]] = []
        ident = kb.identity("agent")
        self.group = GroupCommit(lambda reqs: store.create_ops(ident, reqs), self._after)

    async def _after(self, ops: list[Op]) -> None:
        self.after.append(ops)
        await trio.lowlevel.checkpoint()


async def concurrently(group: GroupCommit, task: Callable[[int], Awaitable[None]], n: int) -> None:
    """Run the committer and ``n`` tasks ``task(0..n-1)`` started together."""
    async with trio.open_nursery() as nursery:
        await nursery.start(group.run)
        async with trio.open_nursery() as writers:
            for i in range(n):
                writers.start_soon(task, i)
        nursery.cancel_scope.cancel()


async def test_concurrent_writes_share_commits_and_all_are_durable(
    kb: KB, store: Store, tmp_path: Path
) -> None:
    h = Harness(kb, store)
    commits = count_commits(store)
    acked: dict[int, Op] = {}

    async def writer(w: int) -> None:
        for k in range(5):
            i = w * 100 + k
            acked[i] = await h.group.submit(report(i))

    await concurrently(h.group, writer, 8)
    assert len(acked) == 40
    seqs = sorted(op.seq for op in acked.values())
    assert seqs == list(range(1, 41))  # one author, no gap, no reuse
    assert h.group.stats.ops == 40 and h.group.stats.largest >= 8
    assert len(commits) == h.group.stats.groups <= 10  # not one commit per write
    assert [op for ops in h.after for op in ops] == sorted(acked.values(), key=lambda o: o.seq)
    store.close()
    with Store.open(tmp_path / "kb.sqlite3") as again:  # acknowledged = on disk
        assert all(again.raw(op.id) == op.raw for op in acked.values())


async def test_an_invalid_write_fails_alone(kb: KB, store: Store) -> None:
    gate = trio.Event()
    groups: list[list[Op]] = []

    async def gated_after(ops: list[Op]) -> None:  # the first write holds the committer
        groups.append(ops)
        await gate.wait()

    ident = kb.identity("agent")
    group = GroupCommit(lambda reqs: store.create_ops(ident, reqs), gated_after)
    bad = ("fix.attest", kb.attest_body(bytes(32), "search"), 5)  # not a verifier
    out: dict[str, Op | Exception] = {}

    async def one(name: str, req: Request) -> None:
        try:
            out[name] = await group.submit(req)
        except InvalidOp as exc:
            out[name] = exc

    async with trio.open_nursery() as nursery:
        await nursery.start(group.run)
        nursery.start_soon(one, "first", report(0))
        while not groups:
            await trio.sleep(0)
        async with trio.open_nursery() as writers:  # these three queue behind it
            writers.start_soon(one, "a", report(1))
            writers.start_soon(one, "bad", bad)
            writers.start_soon(one, "b", report(2))
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        nursery.cancel_scope.cancel()
    assert group.stats.groups == 2 and group.stats.largest == 3  # the three: one group
    assert isinstance(out["bad"], InvalidOp) and out["bad"].code == "not_verifier"
    a, b = out["a"], out["b"]
    assert isinstance(a, Op) and isinstance(b, Op) and {a.seq, b.seq} == {2, 3}
    assert groups[1] == sorted([a, b], key=lambda o: o.seq)
    assert not store.replica.rejected  # the refused op changed nothing


async def test_lone_writes_commit_in_their_own_task_and_bursts_in_groups(
    kb: KB, store: Store
) -> None:
    """A write with nobody writing pays no turn of the scheduler; writes that come
    in a burst are committed together by the committer task."""
    ident = kb.identity("agent")
    by: list[tuple[trio.lowlevel.Task, int]] = []

    def commit(reqs: Sequence[Request]) -> list[Op | InvalidOp]:
        by.append((trio.lowlevel.current_task(), len(reqs)))
        return store.create_ops(ident, reqs)

    async def after(ops: list[Op]) -> None:  # never yields: only the burst rule groups
        pass

    group = GroupCommit(commit, after)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(group.run)
            me = trio.lowlevel.current_task()
            await group.submit(report(1))
            await trio.sleep(1)
            await group.submit(report(2))
            await trio.sleep(1)
            async with trio.open_nursery() as burst:
                for i in range(3, 8):
                    burst.start_soon(group.submit, report(i))
            nursery.cancel_scope.cancel()
            assert by[:2] == [(me, 1), (me, 1)]  # lone: in the caller's task
            assert by[2][0] is not me and by[2][1] == 1  # the first of the burst, alone
            assert [n for t, n in by[3:]] == [4] and by[3][0] is not by[2][0]  # the rest

    clock = trio.testing.MockClock(autojump_threshold=0)
    await trio.to_thread.run_sync(lambda: trio.run(main, clock=clock))
    assert store.replica.last_seq[ident.public] == 7


async def test_a_lone_write_waits_for_no_timer(kb: KB, store: Store) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)  # any sleep would show as time

    async def main() -> float:
        h = Harness(kb, store)
        async with trio.open_nursery() as nursery:
            await nursery.start(h.group.run)
            t0 = trio.current_time()
            await h.group.submit(report(1))
            nursery.cancel_scope.cancel()
            return trio.current_time() - t0

    assert await trio.to_thread.run_sync(lambda: trio.run(main, clock=clock)) == 0


async def test_cancelled_before_it_is_taken_writes_nothing(kb: KB, store: Store) -> None:
    gate = trio.Event()
    after: list[list[Op]] = []

    async def slow_after(ops: list[Op]) -> None:  # the committer is busy with group 1
        after.append(ops)
        await gate.wait()

    ident = kb.identity("agent")
    group = GroupCommit(lambda reqs: store.create_ops(ident, reqs), slow_after)
    async with trio.open_nursery() as nursery:
        await nursery.start(group.run)
        with trio.CancelScope() as already:
            already.cancel()
            await group.submit(report(0))  # cancelled on entry: never queued
        nursery.start_soon(group.submit, report(1))
        while not after:
            await trio.sleep(0)
        with trio.CancelScope() as queued:
            nursery.start_soon(_cancel_soon, queued)
            await group.submit(report(2))  # queued behind group 1, then cancelled
        gate.set()
        await group.submit(report(3))
        nursery.cancel_scope.cancel()
    written = [op.body["template"] for ops in after for op in ops]
    assert written == ["group 1 <*>", "group 3 <*>"]
    assert group.stats.ops == 2
    assert store.replica.last_seq[ident.public] == 2


async def _cancel_soon(scope: trio.CancelScope) -> None:
    await trio.sleep(0)
    scope.cancel()


async def test_a_failed_store_fails_every_write_of_the_group(kb: KB, store: Store) -> None:
    h = Harness(kb, store)
    store._broken = "disk I/O error"  # what a failed SQLite write leaves behind
    errors: list[StoreError] = []

    async def one(i: int) -> None:
        with pytest.raises(StoreError, match="unusable") as exc:
            await h.group.submit(report(i))
        errors.append(exc.value)

    await concurrently(h.group, one, 3)
    assert len({id(e) for e in errors}) == 3  # one error object per caller
    assert not h.after and kb.identity("agent").public not in store.replica.last_seq


async def test_writes_fail_clearly_once_the_committer_stopped(kb: KB, store: Store) -> None:
    h = Harness(kb, store)
    with pytest.raises(StoreError, match="not running"):
        await h.group.submit(report(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(h.group.run)
        nursery.cancel_scope.cancel()
    with pytest.raises(StoreError, match="not running"):
        await h.group.submit(report(2))
    assert kb.identity("agent").public not in store.replica.last_seq


async def test_a_node_commits_concurrent_writes_in_groups_and_gossips_them(tmp_path: Path) -> None:
    build_history(tmp_path, 2, 5, 0)
    net = FakeNetwork(seed=9)
    cfg = [
        NodeConfig(data_dir=tmp_path / f"node-{i}", synchronous="NORMAL", learn=False)
        for i in range(2)
    ]
    async with AsyncExitStack() as stack:
        a: Node = await stack.enter_async_context(open_node(cfg[0], fake=net))
        b: Node = await stack.enter_async_context(open_node(cfg[1], fake=net))
        await a.transport.connect(b.transport.addrs()[0])
        with trio.fail_after(10):
            await a.synced.wait()
        written: list[Op] = []

        async def writer(w: int) -> None:
            for k in range(10):
                body = sample_report(template=f"node group {w}/{k} <*>")
                written.append(await a.write("pattern.report", body))

        async with trio.open_nursery() as writers:
            for w in range(6):
                writers.start_soon(writer, w)
        assert a.writes.stats.ops == 60 and a.writes.stats.groups < 60
        assert a.counters.ops_written == 60
        shown = a.status()["writes"]  # what GET /v1/status reports
        assert shown["ops"] == 60 and shown["groups"] == a.writes.stats.groups > 1
        assert shown["largest"] > 1
        with trio.fail_after(20):
            while not all(b.store.replica.known(op.id) for op in written):
                await trio.sleep(0.01)
        assert b.store.replica.root() == a.store.replica.root()


def _unencodable(template: str) -> dict[str, object]:
    body = sample_report(template=template)
    body["count"] = 1.5  # floats are not canonical data: EncodingError at signing
    return body


async def test_an_unencodable_write_fails_alone_and_the_store_reopens(
    kb: KB, store: Store, tmp_path: Path
) -> None:
    """An EncodingError (not an InvalidOp) used to fail the whole group after the
    writes before it were applied in memory: the next write then depended on ops
    never written, and the store could not be reopened."""
    gate = trio.Event()
    groups: list[list[Op]] = []

    async def gated_after(ops: list[Op]) -> None:  # the first write holds the committer
        groups.append(ops)
        await gate.wait()

    ident = kb.identity("agent")
    group = GroupCommit(lambda reqs: store.create_ops(ident, reqs), gated_after)
    bad: Request = ("pattern.report", _unencodable("bad <*>"), 5)  # type: ignore[assignment]
    out: dict[str, Op | Exception] = {}

    async def one(name: str, req: Request) -> None:
        try:
            out[name] = await group.submit(req)
        except EncodingError as exc:
            out[name] = exc

    async with trio.open_nursery() as nursery:
        await nursery.start(group.run)
        nursery.start_soon(one, "first", report(0))
        while not groups:
            await trio.sleep(0)
        async with trio.open_nursery() as writers:  # these four queue behind it
            writers.start_soon(one, "a", report(1))
            writers.start_soon(one, "b", report(2))
            writers.start_soon(one, "bad", bad)
            writers.start_soon(one, "c", report(3))
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        out["after"] = await group.submit(report(4))
        nursery.cancel_scope.cancel()
    assert group.stats.largest == 4  # the four: one group
    assert isinstance(out["bad"], EncodingError)
    good = [out[k] for k in ("first", "a", "b", "c", "after")]
    assert all(isinstance(op, Op) for op in good)
    assert sorted(op.seq for op in good if isinstance(op, Op)) == [1, 2, 3, 4, 5]
    assert store.broken is None
    root = store.replica.root()
    store.close()
    with Store.open(tmp_path / "kb.sqlite3") as again:
        assert again.replica.root() == root


async def test_a_node_answers_an_unencodable_write_alone_among_concurrent_ones(
    tmp_path: Path,
) -> None:
    spec = prepare(tmp_path, 1, 0)[0]
    cfg = NodeConfig(data_dir=spec.dir, synchronous="NORMAL", learn=False)
    out: dict[str, Op | Exception] = {}
    async with open_node(cfg, fake=FakeNetwork(seed=4)) as node:

        async def one(name: str, body: dict[str, object]) -> None:
            try:
                out[name] = await node.write("pattern.report", body)
            except GossipmindError as exc:
                out[name] = exc

        async with trio.open_nursery() as writers:
            for i in range(3):
                writers.start_soon(one, f"good{i}", sample_report(template=f"good {i} <*>"))
                await trio.sleep(0)
            writers.start_soon(one, "bad", _unencodable("bad <*>"))
            await trio.sleep(0)
            for i in range(3, 6):
                writers.start_soon(one, f"good{i}", sample_report(template=f"good {i} <*>"))
                await trio.sleep(0)
        out["after"] = await node.write("pattern.report", sample_report(template="after <*>"))
        assert node.store.broken is None
        root = node.store.replica.root()
    assert isinstance(out["bad"], EncodingError)
    good = [v for k, v in out.items() if k != "bad"]
    assert len(good) == 7 and all(isinstance(op, Op) for op in good)
    with Store.open(DataDir(spec.dir).store) as again:
        assert again.replica.root() == root
        assert all(again.raw(op.id) == op.raw for op in good if isinstance(op, Op))


async def test_an_unexpected_commit_error_fails_its_group_not_the_committer(
    kb: KB, store: Store
) -> None:
    ident = kb.identity("agent")
    fail = [True]

    def commit(reqs: Sequence[Request]) -> list[Op | GossipmindError]:
        if fail[0]:
            fail[0] = False
            raise RuntimeError("a bug before anything was applied")
        return store.create_ops(ident, reqs)

    async def after(ops: list[Op]) -> None:
        await trio.lowlevel.checkpoint()

    group = GroupCommit(commit, after)
    errors: list[StoreError] = []

    async def one(i: int) -> None:
        try:
            await group.submit(report(i))
        except StoreError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(group.run)
        async with trio.open_nursery() as writers:
            for i in range(3):
                writers.start_soon(one, i)
        op = await group.submit(report(9))  # the committer still runs
        nursery.cancel_scope.cancel()
    assert errors and all("RuntimeError" in str(e) for e in errors)
    assert op.seq == 4 - len(errors)  # the failed writes took no seq


async def test_a_group_of_refused_writes_is_no_transaction(kb: KB, store: Store) -> None:
    """`writes.groups` counts transactions (docs/operations.md §8): a refused write
    alone commits nothing, and was counted as a group."""
    ident = kb.identity("agent")
    after: list[list[Op]] = []

    async def keep(ops: list[Op]) -> None:
        after.append(ops)

    group = GroupCommit(lambda reqs: store.create_ops(ident, reqs), keep)
    async with trio.open_nursery() as nursery:
        await nursery.start(group.run)
        with pytest.raises(InvalidOp) as refused:
            await group.submit(("fix.attest", kb.attest_body(bytes(32), "search"), 5))
        assert refused.value.code == "not_verifier"
        assert (group.stats.groups, group.stats.ops, after) == (0, 0, [])
        await group.submit(report(1))
        assert (group.stats.groups, group.stats.ops, len(after)) == (1, 1, 1)
        nursery.cancel_scope.cancel()
