"""The reporter's journal on a real SQLite store, in one process: outcomes come
back after a crash, the journal is bounded (past it a report is refused, not
taken), and a body never written forgets its rows (store/journal.py)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import trio

from gossipmind.core.errors import InvalidOp, StoreError, Unavailable
from gossipmind.learn.patterns import Failure
from gossipmind.node import reporter as reporter_mod
from gossipmind.node.reporter import Reporter
from gossipmind.store import journal
from gossipmind.store.datadir import DataDir
from gossipmind.store.sqlite import Store
from gossipmind.testnet.setup import prepare

FIX = b"\x07" * 32


def _failure(i: int) -> Failure:
    return Failure("search", "query", "TimeoutError", f"timed out after {i} ms", context={"k": i})


async def _refuse(kind: str, body: dict[str, Any]) -> None:
    raise InvalidOp("unknown_fix", "refused")


def _store(tmp_path: Path) -> Path:
    return DataDir(prepare(tmp_path, 1, 0)[0].dir).store


def test_outcomes_and_failures_taken_come_back_after_a_crash(tmp_path: Path) -> None:
    path = _store(tmp_path)
    a, b = secrets.token_bytes(16), secrets.token_bytes(16)
    with Store.open(path) as store:
        r = Reporter(_refuse, lambda: 5_000, window_ms=10, journal=store.journal)

        async def take() -> None:
            await r.take_outcome(FIX, 3, 1, a)
            await r.take_outcome(FIX, 2, 2, b)
            await r.take_outcome(FIX, 3, 1, a)  # sent again: not counted
            await r.take_failure(_failure(1))
            await r.take_failure(_failure(2), secrets.token_bytes(16))

        trio.run(take)
        assert r.duplicates == 1 and r.journaled == 4
    # the process dies here: nothing was written in an op
    with Store.open(path) as store:
        assert len(journal.load(store.conn)) == 4
        r = Reporter(_refuse, lambda: 6_000, window_ms=10, journal=store.journal)
        assert r.recover(journal.load(store.conn)) == 4
        assert r.outcomes[FIX] == [5, 3] and sum(r.local_counts.values()) == 2
        assert r.seen(a) and r.seen(b)  # a re-send after the restart: counted once
        r.outcome(FIX, 3, 1, a)
        assert r.outcomes[FIX] == [5, 3] and r.duplicates == 1
        # refused as invalid (an unknown fix here): dropped, and its rows forgotten
        assert trio.run(r.flush) == 0 and r.dropped == 2 and r.journaled == 0
        assert journal.load(store.conn) == []


def test_past_its_bound_the_journal_refuses_a_report_and_takes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reporter_mod, "MAX_JOURNAL", 3)
    with Store.open(_store(tmp_path)) as store:
        r = Reporter(_refuse, lambda: 5_000, window_ms=10, journal=store.journal)
        rid = secrets.token_bytes(16)

        async def take() -> None:
            for i in range(3):
                await r.take_failure(_failure(i))
            with pytest.raises(Unavailable):
                await r.take_failure(_failure(3), rid)

        trio.run(take)
        assert r.journaled == 3 and sum(r.local_counts.values()) == 3
        assert not r.seen(rid)  # not taken: the SDK's re-send is counted then
        assert len(journal.load(store.conn)) == 3


def test_concurrent_reports_share_one_journal_commit(tmp_path: Path) -> None:
    with Store.open(_store(tmp_path)) as store:
        r = Reporter(_refuse, lambda: 5_000, window_ms=600_000, journal=store.journal)

        async def burst() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(r.run)
                for _ in range(100):  # until the journal's task runs (a few turns)
                    if r._journal_running:
                        break
                    await trio.sleep(0)
                assert r._journal_running
                async with trio.open_nursery() as senders:
                    for i in range(200):
                        senders.start_soon(r.take_failure, _failure(i), secrets.token_bytes(16))
                nursery.cancel_scope.cancel()

        trio.run(burst)
        assert r.journaled == 200 and len(journal.load(store.conn)) == 200
        assert r.takes <= 3, r.takes  # the first alone, the rest together (MAX_GROUP 256)


def test_a_body_dropped_beyond_max_unwritten_keeps_its_rows_for_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answered reports are not lost even past MAX_UNWRITTEN (the store failing for
    long): the body leaves memory, its journal rows stay and count at the next start."""
    monkeypatch.setattr(reporter_mod, "MAX_UNWRITTEN", 1)
    path = _store(tmp_path)
    other = Failure("billing", "refund", "KeyError", "no such key")
    with Store.open(path) as store:
        r = Reporter(_refuse, lambda: 5_000, window_ms=10, journal=store.journal)

        async def take() -> None:
            await r.take_failure(_failure(1))
            await r.take_failure(other)

        trio.run(take)
        r._close_window()  # two bodies, room for one: the oldest is dropped
        assert r.dropped == 1 and len(journal.load(store.conn)) == 2
    with Store.open(path) as store:
        r = Reporter(_refuse, lambda: 6_000, window_ms=10, journal=store.journal)
        assert r.recover(journal.load(store.conn)) == 2
        assert sum(r.local_counts.values()) == 2


def test_a_report_cancelled_before_its_row_commits_is_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API request cancelled (its client gone) while its row waits for the
    burst's commit takes nothing: not journaled, not counted, its id not taken."""
    monkeypatch.setattr(reporter_mod, "BURST_S", 3600.0)  # every report after the first waits
    with Store.open(_store(tmp_path)) as store:
        r = Reporter(_refuse, lambda: 5_000, window_ms=600_000, journal=store.journal)
        rid = secrets.token_bytes(16)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(r.run)
                for _ in range(100):
                    if r._journal_running:
                        break
                    await trio.sleep(0)
                await r.take_failure(_failure(1))  # alone: committed at once
                assert r.takes == 1
                with trio.move_on_after(0):  # cancelled while it waits for the commit
                    await r.take_failure(_failure(2), rid)
                assert not r.seen(rid) and r.journaled == 1 and not r._taking
                await r.take_failure(_failure(2), rid)  # sent again: taken now
                assert r.seen(rid) and r.journaled == 2 and r.takes == 2
                nursery.cancel_scope.cancel()

        trio.run(main)
        assert len(journal.load(store.conn)) == 2 and sum(r.local_counts.values()) == 2


def test_reports_taken_in_process_are_journaled_before_the_call_returns(tmp_path: Path) -> None:
    """``Node.report_failure`` / ``report_outcome`` (the in-process API) call the
    reporter's ``failure`` / ``outcome``: they too are journaled before they
    return, so a crash before the window's op loses none of them (they were
    counted in memory only)."""
    path = _store(tmp_path)
    rid = secrets.token_bytes(16)
    with Store.open(path) as store:
        r = Reporter(_refuse, lambda: 5_000, window_ms=600_000, journal=store.journal)
        r.failure(_failure(1), rid)
        r.failure(_failure(2))
        r.outcome(FIX, 4, 3)
        assert r.journaled == 3 and r.takes == 3  # one commit each, in the call
        r.failure(_failure(1), rid)  # a duplicate: not journaled again
        assert r.duplicates == 1 and len(journal.load(store.conn)) == 3
    # the process dies here
    with Store.open(path) as store:
        r = Reporter(_refuse, lambda: 6_000, window_ms=10, journal=store.journal)
        assert r.recover(journal.load(store.conn)) == 3
        assert r.outcomes[FIX] == [4, 3] and sum(r.local_counts.values()) == 2
        assert r.seen(rid)


def test_an_in_process_report_is_refused_when_the_journal_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reporter_mod, "MAX_JOURNAL", 2)
    with Store.open(_store(tmp_path)) as store:
        r = Reporter(_refuse, lambda: 5_000, window_ms=600_000, journal=store.journal)
        r.failure(_failure(1))
        r.outcome(FIX, 1, 1)
        with pytest.raises(Unavailable):
            r.failure(_failure(2))
        assert r.journaled == 2 and sum(r.local_counts.values()) == 1  # nothing taken
        assert len(journal.load(store.conn)) == 2


class _Asleep:
    """Stands for the journal task's wake-up event: a burst that sets it wakes
    nobody, so its reports wait for their commit until the test lets them go."""

    def set(self) -> None:
        pass


async def _started(r: Reporter, nursery: trio.Nursery) -> None:
    nursery.start_soon(r.run)
    for _ in range(100):  # until the journal's task runs (a few turns)
        if r._journal_running:
            break
        await trio.sleep(0)
    assert r._journal_running


def test_a_resend_while_the_first_waits_for_its_commit_is_answered_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK sends a report again while the node still commits the first (its
    answer is late): the re-send is answered only once the first's row is committed.
    It was answered at once, as a duplicate; then the first request was cancelled
    (its client gone) and nothing was journaled nor counted: an answered report lost
    (likewise if the node was killed, or the journal failed, before that commit)."""
    monkeypatch.setattr(reporter_mod, "BURST_S", 3600.0)  # every report after the first waits
    with Store.open(_store(tmp_path)) as store:
        r = Reporter(_refuse, lambda: 5_000, window_ms=600_000, journal=store.journal)
        rid = secrets.token_bytes(16)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await _started(r, nursery)
                await r.take_failure(_failure(1))  # alone: committed at once
                first = trio.CancelScope()

                async def send_first() -> None:
                    with first:
                        await r.take_failure(_failure(2), rid)

                wake = r._journal_wake  # what the journal's task waits on
                r._journal_wake = _Asleep()  # type: ignore[assignment]
                nursery.start_soon(send_first)
                for _ in range(50):  # (bounded) until the first waits for its commit
                    if r._taking:
                        break
                    await trio.lowlevel.checkpoint()
                assert r._taking and len(journal.load(store.conn)) == 1
                first.cancel()  # its client gave up, and sends it again:
                r._journal_wake = wake  # (the re-send wakes the journal's task)
                await r.take_failure(_failure(2), rid)  # answered: it must be taken
                assert len(journal.load(store.conn)) == 2 and r.seen(rid)
                assert sum(r.local_counts.values()) == 2 and r.duplicates == 0
                await r.take_failure(_failure(2), rid)  # and once only
                assert r.duplicates == 1 and len(journal.load(store.conn)) == 2
                nursery.cancel_scope.cancel()

        trio.run(main)


def test_a_resend_while_the_first_waits_shares_its_commit_or_its_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answered only once the first's row commits: as taken (counted once), or
    refused with it (503) when the journal fails."""
    monkeypatch.setattr(reporter_mod, "BURST_S", 3600.0)
    with Store.open(_store(tmp_path)) as store:
        fail = [False]

        def journal_(add: Any, drop: Any) -> None:
            if fail[0]:
                raise StoreError("disk full")
            store.journal(add, drop)

        r = Reporter(_refuse, lambda: 5_000, window_ms=600_000, journal=journal_)
        a, b = secrets.token_bytes(16), secrets.token_bytes(16)

        async def twice(rid: bytes) -> list[str]:
            answers: list[str] = []

            async def send() -> None:
                try:
                    await r.take_failure(_failure(3), rid)
                    answers.append(f"taken with {len(journal.load(store.conn))} rows")
                except Unavailable:
                    answers.append("refused")

            async with trio.open_nursery() as senders:
                senders.start_soon(send)
                senders.start_soon(send)
            return answers

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await _started(r, nursery)
                await r.take_failure(_failure(1))
                assert await twice(a) == ["taken with 2 rows"] * 2
                assert r.duplicates == 1 and sum(r.local_counts.values()) == 2
                fail[0] = True
                assert await twice(b) == ["refused", "refused"]
                assert not r.seen(b) and sum(r.local_counts.values()) == 2
                nursery.cancel_scope.cancel()

        trio.run(main)
