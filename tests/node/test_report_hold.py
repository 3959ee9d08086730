"""A steady stream of one pattern's failures (and one fix's outcomes) costs one op
per ``hold_max_ms``, not one per window, and nothing held is lost: a stop writes
it, a bound under pressure writes it, and its ids are remembered meanwhile
(node/reporter.py, learn/hold.py)."""

from __future__ import annotations

import secrets
from typing import Any

import trio

from gossipmind.core.schema import check_body
from gossipmind.learn.patterns import Failure
from gossipmind.node import reporter as reporter_mod
from gossipmind.node.reporter import Reporter

FIX = b"\x05" * 32


class Ops:
    def __init__(self) -> None:
        self.ops: list[tuple[str, dict[str, Any]]] = []

    async def write(self, kind: str, body: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        check_body(kind, body)
        self.ops.append((kind, body))

    def commit(self, requests: list[tuple[str, dict[str, Any], int]]) -> list[object]:
        for kind, body, _ in requests:
            check_body(kind, body)
            self.ops.append((kind, body))
        return [b"id"] * len(requests)

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.ops if k == kind)

    def total(self) -> tuple[int, int]:
        failures = sum(b["count"] for k, b in self.ops if k == "pattern.report")
        attempts = sum(b["attempts"] for k, b in self.ops if k == "fix.outcome")
        return failures, attempts


def _failure(i: int, service: str = "search") -> Failure:
    return Failure(service, "query", "TimeoutError", f"timed out after {i} ms")


def _stream(hold_max_ms: int, minutes: int = 10) -> tuple[Ops, Reporter]:
    """Five failures and one outcome a window (2 s), for ``minutes``, then a stop."""
    ops, t = Ops(), [0]
    r = Reporter(ops.write, lambda: t[0], window_ms=2_000, hold_max_ms=hold_max_ms)

    async def run() -> None:
        for _ in range(minutes * 30):
            for i in range(5):
                t[0] += 300
                r.failure(_failure(i))
            r.outcome(FIX, 2, 1)
            t[0] += 500
            await r.flush()

    trio.run(run)
    r.flush_into(ops.commit)
    return ops, r


def test_a_steady_stream_costs_an_op_per_minute_not_one_per_window() -> None:
    held, r = _stream(60_000)
    plain, _ = _stream(0)
    assert plain.count("pattern.report") == plain.count("fix.outcome") == 300
    # written after 2, 4, 8, 16, 32 s, then once a minute, and at the stop
    assert held.count("pattern.report") == held.count("fix.outcome") == 15
    assert held.total() == plain.total() == (1_500, 600)  # nothing lost
    assert r.local_counts == {} and r.held() == 0


def test_held_failures_are_unsent_until_written_and_a_new_pattern_is_not_held() -> None:
    ops, t = Ops(), [0]
    r = Reporter(ops.write, lambda: t[0], window_ms=1_000, hold_max_ms=30_000)
    rid = secrets.token_bytes(16)

    async def run() -> None:
        r.failure(_failure(1))
        t[0] = 1_000
        assert await r.flush() == 1
        r.failure(_failure(2), rid)  # held 1 s from the last write
        t[0] = 1_500
        assert await r.flush() == 0
        assert r.held() == 1 and sum(r.local_counts.values()) == 1
        assert r.seen(rid)  # a re-send while held is a duplicate
        r.failure(_failure(2), rid)
        r.failure(_failure(3, service="billing"))  # another pattern: its first report
        assert await r.flush() == 1 and ops.ops[-1][1]["service"] == "billing"
        t[0] = 2_000
        assert await r.flush() == 1 and ops.ops[-1][1]["count"] == 1

    trio.run(run)
    assert r.duplicates == 1 and r.local_counts == {} and not r.seen(rid)


def test_pressure_on_a_bound_writes_what_is_held(monkeypatch: Any) -> None:
    monkeypatch.setattr(reporter_mod, "MAX_PENDING_IDS", 8)
    ops, t = Ops(), [0]
    r = Reporter(ops.write, lambda: t[0], window_ms=1_000, hold_max_ms=60_000)

    async def run() -> None:
        r.failure(_failure(0))
        t[0] = 1_000
        await r.flush()
        for i in range(3):
            r.failure(_failure(i), secrets.token_bytes(16))
        t[0] = 1_100
        assert await r.flush() == 0 and r.held() == 1  # 3 ids of 8: held
        r.failure(_failure(9), secrets.token_bytes(16))  # 4 of 8: half full
        assert await r.flush() == 1 and r.held() == 0

    trio.run(run)
    assert ops.total() == (5, 0)


def test_the_pattern_cap_writes_held_patterns_rather_than_drop_a_report() -> None:
    ops, t = Ops(), [0]
    r = Reporter(ops.write, lambda: t[0], window_ms=1_000, hold_max_ms=60_000)
    r.failures.max_patterns = 2

    async def run() -> None:
        for service in ("a", "b"):
            r.failure(_failure(0, service))
        t[0] = 1_000
        await r.flush()
        for service in ("a", "b"):
            r.failure(_failure(1, service))
        t[0] = 1_100
        assert await r.flush() == 0 and r.held() == 2
        r.failure(_failure(2, "c"))  # a third pattern: the held two are closed
        assert r.held() == 0  # "c" is batched, and not held: its first report
        assert await r.flush() == 3

    trio.run(run)
    r.flush_into(ops.commit)
    assert ops.total() == (5, 0)  # every report is in an op
