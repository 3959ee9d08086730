"""The reporter counts a report id once: while its body waits to be written (in
memory), and once written (the store, in the op's transaction), also when a
stopping node writes what it holds (``flush_into``)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from gossipmind.core.identity import load_key
from gossipmind.learn.patterns import Failure
from gossipmind.node import reporter as reporter_mod
from gossipmind.node.reporter import Reporter
from gossipmind.store.datadir import DataDir
from gossipmind.store.sqlite import Store
from gossipmind.testnet.setup import prepare

FAILURE = Failure("search", "query", "TimeoutError", "timed out after 3000 ms")


async def _unused(kind: str, body: dict[str, Any]) -> None:
    raise AssertionError("flush_into writes, not flush")


def test_an_id_is_counted_once_before_and_after_its_op_is_committed(tmp_path: Path) -> None:
    data = DataDir(prepare(tmp_path, 1, 0)[0].dir)
    ident = load_key(data.key.read_bytes(), None)
    failure_id, outcome_id = secrets.token_bytes(16), secrets.token_bytes(16)
    fix = b"\x07" * 32
    with Store.open(data.store) as store:
        r = Reporter(_unused, lambda: 1_000, window_ms=10)
        r.known = store.knows_report
        for _ in range(3):
            r.failure(FAILURE, failure_id)
            r.outcome(fix, 2, 1, outcome_id)
        r.failure(FAILURE)  # no id: counted each time
        assert sum(r.local_counts.values()) == 2 and r.outcomes[fix] == [2, 1]
        assert r.duplicates == 4

        def commit(requests: Any) -> Any:
            return store.create_ops(ident, requests, r.ids(requests))

        assert r.flush_into(commit) == 2
        assert store.knows_report(failure_id) and store.knows_report(outcome_id)
        assert r.seen(failure_id) and r.seen(outcome_id) and not r._pending_ids
        r.failure(FAILURE, failure_id)  # sent again after its op was committed
        assert r.local_counts == {} and r.duplicates == 5
    with Store.open(data.store) as store:  # a restart
        r = Reporter(_unused, lambda: 2_000, window_ms=10)
        r.known = store.knows_report
        r.failure(FAILURE, failure_id)
        assert r.local_counts == {} and r.duplicates == 1


def test_a_body_dropped_unwritten_forgets_its_ids(monkeypatch: Any) -> None:
    """A body the reporter drops (the queue of unwritten bodies is full) was never
    counted: its reports, sent again, are counted then."""
    monkeypatch.setattr(reporter_mod, "MAX_UNWRITTEN", 1)
    r = Reporter(_unused, lambda: 1_000, window_ms=10)
    first = secrets.token_bytes(16)
    r.failure(FAILURE, first)
    r._close_window()
    r.failure(Failure("other", "op", "TimeoutError", "t"), secrets.token_bytes(16))
    r._close_window()  # the first body is dropped to make room
    assert r.dropped == 1 and not r.seen(first)
