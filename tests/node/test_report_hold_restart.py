"""A node that restarts goes on holding its streams of reports where it left them
(node/reportstart.py): it rebuilds each pattern's and fix's hold from its own
recent ops, so a restart no longer costs each stream the doubling from one window
again (real node, real SQLite files, the in-memory network; the node's clock is
a simulated one: ``gossipmind.node.node.now_ms``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from gossipmind.core import ops
from gossipmind.learn.patterns import Failure, reduce
from gossipmind.net.fake import FakeNetwork
from gossipmind.node import node as node_mod
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.node.reporter import Reporter
from gossipmind.node.reportstart import KEYS
from gossipmind.store.keyfile import read_key
from gossipmind.store.sqlite import Store
from gossipmind.testnet.setup import prepare

WINDOW_MS, HOLD_MS, EVERY_MS = 60_000, 600_000, 20_000  # a report of each key every 20 s
FIX = b"\x05" * 32
FAILURE = Failure("payments", "charge", "TimeoutError", "timed out after 30000 ms")
FAILURE_ID = reduce(FAILURE).pattern


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_040_000  # (a window boundary: WINDOW_MS divides it)

    def __call__(self) -> int:
        return self.ms


def _config(data: Path) -> NodeConfig:
    # a window of 60 s of the simulated clock: the reporter's own task, which
    # flushes every 60 s of real time, never runs in a test of a few seconds
    return NodeConfig(
        data_dir=data, report_window_ms=WINDOW_MS, report_hold_max_ms=HOLD_MS, learn=False
    )


async def _stream(node: Node, clock: Clock, until_ms: int) -> list[int]:
    """A failure and an outcome every 20 s, a flush at each window's end, until
    ``until_ms``; returns the ops each flush wrote."""
    written = []
    while clock.ms < until_ms:
        clock.ms += EVERY_MS
        if clock.ms % WINDOW_MS == 0:
            written.append(await node.reporter.flush())
        node.reporter.failure(FAILURE)
        node.reporter.outcome(FIX, 1, 0)
    return written


def _kill_at_exit(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave as a SIGKILL would: what is held stays in the journal, not written."""
    monkeypatch.setattr(node.reporter, "flush_into", lambda commit: 0)


def _ops(data: Path) -> dict[str, Any]:
    with Store.open(data / "kb.sqlite3") as store:
        kinds = dict(store.conn.execute("SELECT kind, COUNT(*) FROM ops GROUP BY kind"))
        (rows,) = store.conn.execute("SELECT COUNT(*) FROM report_journal").fetchone()
        counted = sum(p.count for p in store.replica.fold.patterns.values())
    return {
        "reports": kinds.get("pattern.report", 0),
        "outcomes": kinds.get("fix.outcome", 0),
        "journal": rows,
        "counted": counted,
    }


def _run(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, restarts: list[tuple[int, str]]
) -> dict[str, Any]:
    """Stream for 40 min, restarting the node at each ``(minute, how)`` (``kill``: as a
    SIGKILL; ``stop``: a clean stop, which writes what is held); returns the ops."""
    data = prepare(tmp, 1, 0)[0].dir
    clock = Clock()
    start = clock.ms
    monkeypatch.setattr(node_mod, "now_ms", clock)
    held_after: list[int] = []

    async def main() -> None:
        ends = [*restarts, (40, "stop")]
        for i, (minute, how) in enumerate(ends):
            async with open_node(_config(data), fake=FakeNetwork(seed=1)) as node:
                if i:  # the stream goes on: its next window is held, not written
                    clock.ms += EVERY_MS
                    node.reporter.failure(FAILURE)
                    node.reporter.outcome(FIX, 1, 0)
                    held_after.append(node.reporter.held())
                await _stream(node, clock, start + minute * 60_000 + EVERY_MS // 2)
                if how == "kill":
                    _kill_at_exit(node, monkeypatch)

    trio.run(main)
    return {**_ops(data), "held_after": held_after, "data": data}


def test_a_stream_killed_and_restarted_is_written_as_if_it_had_run_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 min of a failure and an outcome every 20 s: written after 1, 2, 4, 8, 16,
    26 and 36 min, and at the stop. Killed (as by SIGKILL) at 10, 20 and 30 min and
    restarted, the node holds the stream's next report (its journaled ones too:
    their hold comes from the ops) and writes exactly the same ops: it wrote 3 more
    of each kind before (a stream's doubling from one window again)."""
    plain = _run(tmp_path / "plain", monkeypatch, [])
    del plain["data"]
    assert (plain["reports"], plain["outcomes"], plain["counted"]) == (8, 8, 121)
    kills = [(10, "kill"), (20, "kill"), (30, "kill")]
    killed = _run(tmp_path / "killed", monkeypatch, kills)
    assert killed["held_after"] == [2, 2, 2]  # the pattern and the fix: held, not written
    assert {k: killed[k] for k in plain} == {**plain, "held_after": [2, 2, 2]}
    assert killed["journal"] == 0  # nothing acknowledged is lost; all counted once


def test_a_stream_stopped_and_restarted_is_held_from_the_stop_s_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clean stop writes what is held; the restarted node holds the stream from
    that write on (as long as the stream had lasted then: here the longest, 10 min)
    instead of starting it again: stopped at 10, 20 and 30 min, 8 ops of each kind
    (1, 2, 4, 8 min, the three stops, the last stop) where it wrote 20 before."""
    stops = [(10, "stop"), (20, "stop"), (30, "stop")]
    stopped = _run(tmp_path, monkeypatch, stops)
    assert stopped["held_after"] == [2, 2, 2]
    assert (stopped["reports"], stopped["outcomes"], stopped["counted"]) == (8, 8, 121)
    assert stopped["journal"] == 0


def test_a_start_reads_its_own_latest_report_ops_and_no_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Store.newest_of``: the node's own report ops, newest first, down to the
    first one older than asked, at most as many as asked."""
    data = _run(tmp_path, monkeypatch, [(20, "kill")])["data"]
    me = read_key(data / "identity.key").public
    with Store.open(data / "kb.sqlite3") as store:
        mine = store.conn.execute(
            "SELECT kind, ts FROM ops WHERE author = ? AND kind IN (?, ?) ORDER BY seq DESC",
            (me, *KEYS),
        ).fetchall()
        assert len(mine) == 16
        since = mine[5][1]  # the sixth newest
        got = store.newest_of(me, tuple(KEYS), since, 100)
        assert [(k, ts) for k, ts, _ in got] == [(k, ts) for k, ts in mine if ts >= since]
        assert 6 <= len(got) < len(mine)
        for kind, ts, raw in got:  # a pattern's window ends when it was closed: its ts
            body = ops.decode_checked_before(raw).body
            assert kind != "pattern.report" or body["window"][1] == ts
        assert [ts for _, ts, _ in store.newest_of(me, tuple(KEYS), 0, 3)] == [
            ts for _, ts in mine[:3]
        ]
        assert store.newest_of(b"\x00" * 32, tuple(KEYS), 0, 100) == []  # not ours


def test_a_report_op_s_ts_is_when_its_window_was_closed_not_when_it_was_written() -> None:
    """``Reporter.stamp``: the ts the node gives a report's op is the time the hold
    counts its key as written, also when the write comes later (a write that waits
    for the store, or for the first sync); a body no longer queued has none."""
    clock, seen = [0], []

    async def write(kind: str, body: dict[str, Any]) -> None:
        clock[0] += 700  # (the write takes its time)
        seen.append((kind, r.stamp(body, clock[0])))
        await trio.lowlevel.checkpoint()

    r = Reporter(write, lambda: clock[0], window_ms=1_000, hold_max_ms=60_000)

    async def main() -> None:
        clock[0] = 400
        r.failure(FAILURE)
        r.outcome(FIX, 1, 1)
        clock[0] = 1_000
        assert await r.flush() == 2

    trio.run(main)
    assert seen == [("pattern.report", 1_000), ("fix.outcome", 1_000)]
    assert r.failures.hold is not None and r.failures.hold.held_until(FAILURE_ID) == 2_000
    assert r.stamp({}, 5) == 5
