"""The body the reporter is writing is its own: a stop never writes it twice, a full
queue never drops it, and nothing is lost or left counted as unsent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from gossipmind.core.replica import Replica
from gossipmind.learn.patterns import Failure
from gossipmind.net.fake import FakeNetwork
from gossipmind.node import reporter as reporter_mod
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.node.reporter import Reporter
from gossipmind.store.sqlite import Store
from gossipmind.testing import sample_report
from gossipmind.testnet.setup import prepare


def report(node: Node, n: int) -> None:
    for i in range(n):
        node.report_failure(Failure("durab", "charge", "TimeoutError", f"timed out after {i} ms"))


def block_gossip(node: Node) -> trio.Event:
    """A full gossip queue: handing an op to gossip waits (back-pressure) forever."""
    full = trio.Event()

    async def put(raw: bytes) -> None:
        full.set()
        await trio.sleep_forever()

    node.batcher.put = put  # type: ignore[method-assign]
    return full


def reports(r: Replica) -> tuple[int, list[int]]:
    """The pattern.report ops, and the count of the durab pattern."""
    ops = sum(1 for m in r.meta.values() if m.kind == "pattern.report")
    return ops, [p.count for p in r.fold.patterns.values() if p.service == "durab"]


def reported(data_dir: Path) -> tuple[int, list[int]]:
    with Store.open(data_dir / "kb.sqlite3") as store:
        return reports(store.replica)


async def test_a_report_committed_while_gossip_waits_is_not_written_again_at_stop(
    tmp_path: Path,
) -> None:
    """The review's case: the report op is durable, its write waits for the full gossip
    queue, the node stops. The clean stop's flush wrote it again: count 10, not 5."""
    spec = prepare(tmp_path, 1, 0)[0]
    cfg = NodeConfig(data_dir=spec.dir, synchronous="NORMAL", report_window_ms=100, learn=False)
    async with open_node(cfg, fake=FakeNetwork(seed=1)) as node:
        full = block_gossip(node)
        report(node, 5)
        with trio.fail_after(10):
            await full.wait()  # committed; the reporter's write waits for gossip
        assert reports(node.store.replica)[0] == 1
    assert reported(spec.dir) == (1, [5])
    assert node.reporter.local_counts == {} and node.reporter.dropped == 0


async def test_a_committed_report_is_not_also_counted_as_unsent_while_gossip_waits(
    tmp_path: Path,
) -> None:
    """The count the API answers (fold + ``local_counts``) was twice the failures from
    the commit until gossip took the op: ``_done`` ran when the write returned."""
    spec = prepare(tmp_path, 1, 0)[0]
    cfg = NodeConfig(data_dir=spec.dir, synchronous="NORMAL", report_window_ms=100, learn=False)
    async with open_node(cfg, fake=FakeNetwork(seed=1)) as node:
        full = block_gossip(node)
        report(node, 5)
        (pattern,) = node.reporter.local_counts
        assert node.reporter.local_counts[pattern] == 5  # taken, not written yet
        with trio.fail_after(10):
            await full.wait()  # committed; the reporter's write waits for gossip
        assert reports(node.store.replica) == (1, [5])
        assert node.reporter.local_counts.get(pattern, 0) == 0


async def test_a_report_not_yet_committed_at_stop_is_written_once_by_the_final_flush(
    tmp_path: Path,
) -> None:
    """The reporter's write waits behind another group (its op not committed) when the
    node stops: the cancelled write puts it back and the stop writes it, once."""
    spec = prepare(tmp_path, 1, 0)[0]
    cfg = NodeConfig(data_dir=spec.dir, synchronous="NORMAL", report_window_ms=100, learn=False)
    async with open_node(cfg, fake=FakeNetwork(seed=1)) as node, trio.open_nursery() as n:
        full = block_gossip(node)
        n.start_soon(node.write, "pattern.report", sample_report())  # holds the committer
        with trio.fail_after(10):
            await full.wait()
            report(node, 5)
            while not node.writes._queue:  # the reporter's write queued behind it
                await trio.sleep(0.01)
        assert reports(node.store.replica) == (1, [])  # only the other write is durable yet
        n.cancel_scope.cancel()
    assert reported(spec.dir) == (2, [5])
    assert node.reporter.local_counts == {} and node.reporter.dropped == 0


async def test_flush_into_does_not_write_the_body_a_flush_has_in_flight() -> None:
    gate, written = trio.Event(), []

    async def write(kind: str, body: dict[str, Any]) -> None:
        await gate.wait()
        written.append(body["service"])

    t = [0]
    r = Reporter(write, lambda: t[0], window_ms=10)
    r.failures.max_patterns = 1  # each new pattern closes the window
    for s in ("svca", "svcb"):
        r.failure(Failure(s, "op", "E", "boom"))
    committed: list[str] = []

    def commit(requests: Any) -> list[object]:
        committed.extend(body["service"] for _, body, _ in requests)
        return [object() for _ in requests]

    async with trio.open_nursery() as n:
        n.start_soon(r.flush)
        await trio.sleep(0.01)  # svca in flight
        assert r.flush_into(commit) == 1
        gate.set()
    assert committed == ["svcb"] and written == ["svca"]
    assert r.local_counts == {} and r.dropped == 0


async def test_a_cancelled_flush_puts_its_uncommitted_body_back() -> None:
    async def write(kind: str, body: dict[str, Any]) -> None:
        await trio.sleep_forever()  # e.g. queued behind another group

    t = [0]
    r = Reporter(write, lambda: t[0], window_ms=10)
    r.failure(Failure("svca", "op", "E", "boom"))
    async with trio.open_nursery() as n:
        n.start_soon(r.flush)
        await trio.sleep(0.01)
        n.cancel_scope.cancel()
    committed: list[str] = []

    def commit(requests: Any) -> list[object]:
        committed.extend(body["service"] for _, body, _ in requests)
        return [object() for _ in requests]

    assert r.flush_into(commit) == 1 and committed == ["svca"] and r.local_counts == {}


async def test_a_full_queue_never_drops_the_body_being_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The review's case: MAX_UNWRITTEN 4, 7 patterns, the first write slow. The queue
    dropped the body in flight (written anyway) and flush then removed the next one,
    never written nor counted; dropped bodies stayed in ``local_counts`` forever."""
    monkeypatch.setattr(reporter_mod, "MAX_UNWRITTEN", 4)
    gate, written = trio.Event(), []

    async def write(kind: str, body: dict[str, Any]) -> None:
        await gate.wait()
        written.append(body["service"])

    t = [0]
    r = Reporter(write, lambda: t[0], window_ms=10)
    r.failures.max_patterns = 1  # one pattern per window: each new one closes the window
    services = [f"svc{c}" for c in "abcdefg"]
    async with trio.open_nursery() as n:
        for s in services[:4]:
            r.failure(Failure(s, "op", "E", "boom"))
        n.start_soon(r.flush)  # writes svca, slowly
        await trio.sleep(0.01)
        for s in services[4:]:  # the queue is full: one body is dropped
            r.failure(Failure(s, "op", "E", "boom"))
        gate.set()
    await r.flush()
    assert written == ["svca", "svcc", "svcd", "svce", "svcf", "svcg"]  # svcb dropped
    assert r.dropped == 1 and len(written) + r.dropped == len(services)
    assert r.local_counts == {}  # a dropped body's failures are not unsent for ever
