"""The reporter's batches survive a failed write, and outcome sums stay within an op's
bounds: nothing the agent reported is lost to one bad window."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from gossipmind.core.errors import InvalidOp, StoreError
from gossipmind.core.schema import MAX_COUNTER, check_body
from gossipmind.learn.patterns import Failure
from gossipmind.node import reporter as reporter_mod
from gossipmind.node.reporter import Reporter


class Store:
    """A write that checks bodies like the node does, and fails on demand."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, dict[str, Any]]] = []
        self.fail: list[BaseException] = []

    async def write(self, kind: str, body: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        if self.fail:
            raise self.fail.pop(0)
        check_body(kind, body)
        self.ops.append((kind, body))


def failures(r: Reporter, n: int) -> None:
    for i in range(n):
        r.failure(Failure("search", "query", "TimeoutError", f"timed out after {i} ms"))


async def test_a_failed_write_keeps_the_batch_for_the_next_window() -> None:
    store, t = Store(), [0]
    r = Reporter(store.write, lambda: t[0], window_ms=10)
    failures(r, 5)
    r.outcome(b"\x02" * 32, 3, 2)
    t[0] = 20
    store.fail.append(StoreError("database is locked"))
    with pytest.raises(StoreError):
        await r.flush()
    assert store.ops == []
    t[0] = 40
    assert await r.flush() == 2
    kinds = [k for k, _ in store.ops]
    assert kinds == ["pattern.report", "fix.outcome"]
    assert store.ops[0][1]["count"] == 5 and store.ops[1][1]["attempts"] == 3


async def test_a_refused_body_is_dropped_and_the_others_are_written() -> None:
    store, t = Store(), [0]
    r = Reporter(store.write, lambda: t[0], window_ms=10)
    failures(r, 2)
    r.outcome(b"\x02" * 32, 1, 1)
    t[0] = 20
    store.fail.append(InvalidOp("unauthorized", "not a member"))  # the report is refused
    assert await r.flush() == 1
    assert [k for k, _ in store.ops] == ["fix.outcome"] and r.dropped == 1
    assert await r.flush() == 0  # nothing left to retry


async def test_outcome_sums_beyond_an_op_s_bound_are_split_not_lost() -> None:
    store, t = Store(), [0]
    r = Reporter(store.write, lambda: t[0], window_ms=10)
    for _ in range(1001):
        r.outcome(b"\x01" * 32, 1_000_000, 999_999)
    r.outcome(b"\x03" * 32, 1, 1)
    t[0] = 20
    assert await r.flush() == 3
    one = [b for k, b in store.ops if b["fix"] == b"\x01" * 32]
    assert len(one) == 2 and all(b["attempts"] <= MAX_COUNTER for b in one)
    assert sum(b["attempts"] for b in one) == 1001 * 1_000_000
    assert sum(b["successes"] for b in one) == 1001 * 999_999
    assert [b["attempts"] for k, b in store.ops if b["fix"] == b"\x03" * 32] == [1]
    assert r.dropped == 0


async def test_unwritten_bodies_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    store, t = Store(), [0]
    monkeypatch.setattr(reporter_mod, "MAX_UNWRITTEN", 3)
    r = Reporter(store.write, lambda: t[0], window_ms=10)
    for i in range(5):
        r.outcome(bytes([i]) * 32, 1, 1)
    t[0] = 20
    store.fail.append(StoreError("disk full"))
    with pytest.raises(StoreError):
        await r.flush()
    assert r.dropped == 2
    assert await r.flush() == 3
    assert [b["fix"][0] for _, b in store.ops] == [2, 3, 4]  # the newest were kept


def names(n: int) -> list[str]:
    """``n`` distinct service names (letters only: names are normalised)."""
    out = []
    for i in range(n):
        s = ""
        while True:
            s += "abcdefghijklmnopqrstuvwxyz"[i % 26]
            i //= 26
            if not i:
                break
        out.append("svc" + s)
    return out


async def test_a_full_window_is_closed_early_not_dropped() -> None:
    store, t = Store(), [0]
    r = Reporter(store.write, lambda: t[0], window_ms=10)
    services = names(r.failures.max_patterns + 30)
    for s in services:
        r.failure(Failure(s, "query", "TimeoutError", "timed out"))
    assert r.dropped == 0
    t[0] = 20
    assert await r.flush() == len(services)
    assert {b["service"] for _, b in store.ops} == set(services)


async def test_unsent_counts_go_when_the_reports_are_written() -> None:
    store, t = Store(), [0]
    r = Reporter(store.write, lambda: t[0], window_ms=10)
    failures(r, 3)
    assert sum(r.local_counts.values()) == 3
    t[0] = 20
    await r.flush()
    assert r.local_counts == {}  # it grew by one entry per pattern, forever


def test_flush_into_writes_everything_synchronously() -> None:
    t = [0]
    r = Reporter(Store().write, lambda: t[0], window_ms=10)
    failures(r, 2)
    r.outcome(b"\x02" * 32, 1, 1)
    got: list[tuple[str, dict[str, Any], int]] = []

    def commit(requests: Any) -> list[object]:
        got.extend(requests)
        return [object() for _ in requests]

    assert r.flush_into(commit) == 2
    assert [k for k, _, _ in got] == ["pattern.report", "fix.outcome"]
    assert r.flush_into(commit) == 0 and r.local_counts == {}


async def test_refused_bodies_are_said_a_few_times_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key that is not (or no longer) a member has every report refused: one
    warning per body, one body per pattern and window, flooded the log."""
    caplog.set_level(logging.WARNING, logger="gossipmind.node.reporter")
    # the rate has its own monotonic clock: a wall clock stepping back would silence it
    clock = [1000.0]
    monkeypatch.setattr(reporter_mod, "_clock", lambda: clock[0])
    store, t = Store(), [0]
    r = Reporter(store.write, lambda: t[0], window_ms=10)
    for i in range(40):
        r.failure(Failure(f"service-{i}", "query", "TimeoutError", "timed out"))
    t[0] = 20
    store.fail.extend(InvalidOp("revoked", "the author's key has been revoked") for _ in range(40))
    assert await r.flush() == 0
    assert r.dropped == 40 and store.ops == []
    lines = [rec.getMessage() for rec in caplog.records]
    assert len(lines) == 5 and all("refused: revoked" in line for line in lines)
    caplog.clear()
    t[0] = 61_000  # a minute on: said again, with the count of those not said
    clock[0] += 61
    r.failure(Failure("search", "query", "TimeoutError", "timed out"))
    t[0] = 61_020
    store.fail.append(InvalidOp("revoked", "the author's key has been revoked"))
    await r.flush()
    (line,) = [rec.getMessage() for rec in caplog.records]
    assert line.endswith("(35 more were dropped and not said)")
