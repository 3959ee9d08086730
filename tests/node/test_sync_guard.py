"""Sync sessions against peers that stall, trickle or break the protocol: `drive`
names why a session failed, and `SyncGuard` makes such peers wait."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from gossipmind.core import encoding
from gossipmind.core.errors import NetworkError
from gossipmind.net.fake import FakeNetwork
from gossipmind.net.interface import SYNC_PROTOCOL, StreamEOF
from gossipmind.node import syncer
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import open_node
from gossipmind.node.syncer import PENALIZED, SyncCounters, SyncGuard, drive
from gossipmind.sync import messages
from gossipmind.sync import session as session_mod
from gossipmind.sync.messages import Hello, Ops
from gossipmind.sync.session import Session
from gossipmind.testing import KB, sample_report
from gossipmind.testing.memory import MemoryKB
from gossipmind.testnet.setup import prepare


class End:
    """One end of an in-memory stream of frames."""

    def __init__(
        self,
        send: trio.MemorySendChannel[bytes],
        recv: trio.MemoryReceiveChannel[bytes],
    ) -> None:
        self._send, self._recv = send, recv
        self.was_reset = False

    @property
    def remote_peer(self) -> str:
        return "peer"

    @property
    def protocol(self) -> str:
        return messages.PROTOCOL

    async def send(self, frame: bytes) -> None:
        await self._send.send(frame)

    async def receive(self) -> bytes:
        try:
            return await self._recv.receive()
        except trio.EndOfChannel:
            raise StreamEOF("closed") from None

    async def close(self) -> None:
        await self._send.aclose()

    async def reset(self) -> None:
        self.was_reset = True
        await self._send.aclose()


def pipe() -> tuple[End, End]:
    a_send, b_recv = trio.open_memory_channel[bytes](100)
    b_send, a_recv = trio.open_memory_channel[bytes](100)
    return End(a_send, a_recv), End(b_send, b_recv)


def responder() -> tuple[Session, MemoryKB]:
    kb = MemoryKB(KB(seed=5).genesis)
    return Session(kb, initiator=False), kb


def hello(kb: MemoryKB) -> bytes:
    return messages.encode(Hello(kb.net, {}, [], b"\x01" * 32, 0, []))


async def test_a_peer_that_says_nothing_is_dropped_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, theirs = pipe()
    session, kb = responder()
    counters = SyncCounters()
    why = await drive(ours, session, kb.ingest_raw, counters, timeout=30, limit=120)
    assert why == "timeout" and ours.was_reset
    assert counters.failed_by_reason == {"timeout": 1}
    assert trio.current_time() == pytest.approx(30)
    del theirs


async def test_a_peer_that_trickles_empty_frames_is_dropped_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, theirs = pipe()
    session, kb = responder()
    counters = SyncCounters()

    async def trickle() -> None:
        await theirs.send(hello(kb))
        while True:  # a frame before every timeout: the per-frame timer never fires
            await trio.sleep(20)
            await theirs.send(messages.encode(Ops([])))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        why = await drive(ours, session, kb.ingest_raw, counters, timeout=30, limit=120)
        nursery.cancel_scope.cancel()
    assert why == "deadline" and ours.was_reset
    assert counters.failed_by_reason == {"deadline": 1}
    assert trio.current_time() == pytest.approx(120)


def new_ops(count: int) -> list[bytes]:
    """Ops of the responder's network that it does not hold (the admin's reports)."""
    kb = KB(seed=5)
    return [kb.report("admin", service="s", operation=f"o{i}").raw for i in range(count)]


@pytest.mark.parametrize(
    ("every", "per_frame", "why"),
    [(2, 2, "overran"), (20, 1, "deadline")],
    ids=["slow-link", "trickle-of-ops"],
)
async def test_a_session_moving_ops_steadily_overruns_without_a_penalty(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    every: float,
    per_frame: int,
    why: str,
) -> None:
    """A long catch-up over a slow link reaches the deadline while new ops keep
    coming: it ends there ("overran", not a penalized reason; ops applied stay).
    A peer trickling an op now and then to hold the slot is still a "deadline".
    The rate that tells them apart is lowered here (the test's ops are few)."""
    monkeypatch.setattr(syncer, "MIN_PROGRESS_RATE", 256)
    ours, theirs = pipe()
    session, kb = responder()
    counters = SyncCounters()
    raws = new_ops(130)

    async def feed() -> None:
        await theirs.send(hello(kb))
        for start in range(0, len(raws), per_frame):
            await trio.sleep(every)
            await theirs.send(messages.encode(Ops(raws[start : start + per_frame])))
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        outcome = await drive(ours, session, kb.ingest_raw, counters, timeout=30, limit=120)
        nursery.cancel_scope.cancel()
    assert outcome == why and ours.was_reset
    assert counters.failed_by_reason == {why: 1}
    wait = SyncGuard(base=30, cap=480).record("peer", outcome, trio.current_time())
    assert wait == (0 if why == "overran" else 30)
    applied = len(kb.replica.meta) - 1
    assert applied == (118 if why == "overran" else 5)  # the frames before the deadline


def store_to_serve(monkeypatch: pytest.MonkeyPatch, frame_bytes: int) -> MemoryKB:
    """A store of 300 ops that sync serves in frames of ``frame_bytes`` of ops."""
    whole = session_mod.frames
    monkeypatch.setattr(session_mod, "frames", lambda raws, limit=0: whole(raws, frame_bytes))
    kb = MemoryKB(KB(seed=5).genesis)
    kb.ingest_raw(new_ops(300))
    return kb


async def test_a_peer_reading_our_ops_slowly_cannot_overrun_unpenalized(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer with an empty store asks for everything and reads it slowly: we send
    ops at its pace for the whole session. What we send does not count as the
    progress that excuses a deadline (the peer sets that pace, and needs nothing
    to do it): a deadline, penalized. (With sent ops counted, it was "overran",
    no wait, and the peer held the one sync slot all the time.)"""
    monkeypatch.setattr(syncer, "MIN_PROGRESS_RATE", 256)
    kb = store_to_serve(monkeypatch, 8 * 1024)  # ~17 frames
    a, b = trio.open_memory_channel[bytes](0)  # no buffer: our sends wait for its reads
    c, d = trio.open_memory_channel[bytes](100)
    ours, theirs = End(a, d), End(c, b)
    session = Session(kb, initiator=False)
    counters = SyncCounters()

    async def slow_reader() -> None:
        await theirs.send(messages.encode(Hello(kb.net, {}, [], b"\x01" * 32, 0, [])))
        with contextlib.suppress(StreamEOF):  # until we reset the stream
            while True:
                await theirs.receive()
                await trio.sleep(25)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_reader)
        outcome = await drive(ours, session, kb.ingest_raw, counters, timeout=30, limit=120)
        nursery.cancel_scope.cancel()
    assert session.stats.ops_sent > 0  # it did get ops, slowly
    assert outcome == "deadline"
    assert SyncGuard(base=30, cap=480).record("peer", outcome, trio.current_time()) == 30


async def test_a_malformed_frame_is_a_protocol_failure() -> None:
    ours, theirs = pipe()
    session, kb = responder()
    counters = SyncCounters()
    await theirs.send(b"\xc1 not msgpack")
    why = await drive(ours, session, kb.ingest_raw, counters, timeout=30)
    assert why == "protocol" and counters.failed == 1 and ours.was_reset


async def test_a_peer_that_closes_early_is_not_penalized() -> None:
    ours, theirs = pipe()
    session, kb = responder()
    counters = SyncCounters()
    await theirs.close()
    why = await drive(ours, session, kb.ingest_raw, counters, timeout=30)
    assert why == "eof" and "eof" not in PENALIZED


def test_penalties_double_up_to_the_cap() -> None:
    guard = SyncGuard(base=30, cap=120)
    assert guard.allowed("p", 0)
    waits = [guard.record("p", "timeout", 0) for _ in range(4)]
    assert waits == [30, 60, 120, 120]
    assert not guard.allowed("p", 119) and guard.allowed("p", 120)
    assert guard.allowed("q", 0)  # per peer


def test_a_peer_that_stalls_between_honest_sessions_keeps_doubling() -> None:
    """One completed session between stalls does not wipe the record (it used to:
    such a peer only ever waited the base penalty)."""
    guard = SyncGuard(base=30, cap=240)
    now, waits = 0.0, []
    for _ in range(4):
        waits.append(guard.record("p", "timeout", now))
        now += waits[-1]
        assert guard.allowed("p", now)
        assert guard.record("p", "", now) == 0  # an honest session
        now += 1
    assert waits == [30, 60, 120, 240]
    assert guard.record("p", "timeout", now) == 240  # it stays at the cap


def test_time_forgives_one_strike_per_cap_and_then_the_peer_is_forgotten() -> None:
    guard = SyncGuard(base=30, cap=120)
    for _ in range(3):
        guard.record("p", "protocol", 0)  # three strikes, the last wait ends at 120
    assert guard.strikes("p", 119) == 3
    assert guard.strikes("p", 120) == 2 and guard.strikes("p", 360) == 0
    assert guard.record("p", "timeout", 240) == 30 * 2  # one strike left: the wait is doubled once
    assert guard.record("p", "", 600) == 0 and "p" not in guard._records  # all forgiven: forgotten
    assert guard.record("p", "timeout", 601) == 30  # a first offence again


def test_ordinary_failures_are_not_penalized() -> None:
    guard = SyncGuard(base=30, cap=120)
    # a frame cut short is a link that dropped inside it (judged by idle time)
    for reason in ("eof", "network", "truncated"):
        assert guard.record("p", reason, 0) == 0
    assert guard.allowed("p", 0)
    for reason in ("timeout", "deadline", "protocol", "frame_too_large"):
        assert reason in PENALIZED


def test_the_guard_keeps_a_bounded_number_of_records() -> None:
    guard = SyncGuard(base=30, cap=120, max_peers=100)
    for i in range(1000):
        guard.record(f"p{i}", "timeout", i)
    assert len(guard._records) <= 100
    assert not guard.allowed("p999", 999)  # the latest offenders are kept


def initiator() -> tuple[Session, MemoryKB]:
    kb = MemoryKB(KB(seed=5).genesis)
    return Session(kb, initiator=True), kb


@pytest.mark.parametrize("reason", ["busy", "later"])
async def test_a_refusal_before_hello_is_declined_not_completed(reason: str) -> None:
    ours, theirs = pipe()
    session, kb = initiator()
    counters = SyncCounters()
    await theirs.send(messages.encode(messages.Bye(reason)))
    why = await drive(ours, session, kb.ingest_raw, counters, timeout=30)
    # a refused session proves nothing about the peer's ops: it must not count as
    # the sync a restored node's first write waits for, nor clear a penalty
    assert why == "declined" and not session.completed
    assert counters.completed == 0 and counters.failed == 0
    assert counters.declined_by_reason == {reason: 1}
    assert messages.decode(await theirs.receive()) == session.hello()  # it did ask


async def declined_as(reason: str) -> SyncCounters:
    ours, theirs = pipe()
    session, kb = initiator()
    counters = SyncCounters()
    await theirs.send(messages.encode(messages.Bye(reason)))
    assert await drive(ours, session, kb.ingest_raw, counters, timeout=30) == "declined"
    return counters


async def test_declined_sessions_are_counted_under_a_fixed_set_of_reasons() -> None:
    """Counted by the peer's words, a peer sending a new reason each time grew
    declined_by_reason (kept for good, and all of it in status()) without bound."""
    for reason in ("busy", "later", "wrong network"):  # what our nodes send
        assert (await declined_as(reason)).declined_by_reason == {reason: 1}
    assert (await declined_as("")).declined_by_reason == {"bye": 1}
    for reason in ("in sync", "Busy", "x" * 200):
        assert (await declined_as(reason)).declined_by_reason == {"other": 1}


async def test_an_oversized_bye_reason_is_a_penalized_protocol_failure() -> None:
    ours, theirs = pipe()
    session, kb = initiator()
    counters = SyncCounters()
    await theirs.send(encoding.encode({"t": "bye", "reason": "x" * 256 * 1024}))
    why = await drive(ours, session, kb.ingest_raw, counters, timeout=30)
    assert why == "protocol" and why in PENALIZED
    assert counters.declined_by_reason == {} and counters.failed_by_reason == {"protocol": 1}


async def test_a_peer_saying_bye_with_new_reasons_grows_no_counters(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A peer opened sessions and said bye before hello, with a unique 256 KiB
    reason each time: 200 sessions held 50 MiB in the node's counters, all of it
    in status(), unpenalized."""
    net = FakeNetwork(seed=4)
    spec = prepare(tmp_path, 1, 0)[0]
    cfg = NodeConfig(data_dir=spec.dir, synchronous="NORMAL", learn=False)

    async def until(done: Callable[[], bool]) -> None:
        with trio.fail_after(60):
            while not done():
                await trio.sleep(0.01)

    async def bye(reason: str) -> None:
        """Open a session and say bye at once; again if the node's slot was busy."""
        ended = sum(node.sync.declined_by_reason.values()) + node.sync.failed
        frames = [messages.encode(messages.Bye("busy"))]
        while messages.encode(messages.Bye("busy")) in frames:
            stream = await evil.open_stream(node.transport.peer_id, SYNC_PROTOCOL)
            await stream.send(encoding.encode({"t": "bye", "reason": reason}))
            frames = []
            with trio.fail_after(60):
                try:
                    while True:  # until the node ends the session
                        frames.append(await stream.receive())
                except (StreamEOF, NetworkError):
                    pass
        # the node counts the session once it has closed the stream
        await until(lambda: sum(node.sync.declined_by_reason.values()) + node.sync.failed > ended)

    async with open_node(cfg, fake=net) as node, net.open_transport(peer_id="evil") as evil:
        await evil.connect(node.transport.addrs()[0])
        for i in range(100):
            await bye(f"{i:08d}" + "x" * 192)  # 200 characters: a valid bye
        assert node.sync.declined_by_reason == {"other": 100}
        assert node.status()["sync"]["declined_by_reason"] == {"other": 100}
        await bye("x" * 256 * 1024)  # over 200 characters: refused, and penalized
        assert node.sync.failed_by_reason == {"protocol": 1}
        assert node.sync.declined_by_reason == {"other": 100}
        await until(lambda: not node.guard.allowed("evil", trio.current_time()))


async def test_a_peer_of_another_network_is_declined() -> None:
    ours, theirs = pipe()
    session, kb = responder()
    counters = SyncCounters()
    other = MemoryKB(KB(seed=6).genesis)
    await theirs.send(hello(other))
    why = await drive(ours, session, kb.ingest_raw, counters, timeout=30)
    assert why == "declined" and counters.completed == 0
    assert counters.declined_by_reason == {"wrong network": 1}
    assert messages.decode(await theirs.receive()) == messages.Bye("wrong network")


async def test_a_session_that_exchanged_hellos_completes() -> None:
    ours, theirs = pipe()
    session, kb = initiator()
    counters = SyncCounters()
    await theirs.send(messages.encode(Hello(kb.net, {}, [], kb.root(), 1, [])))
    why = await drive(ours, session, kb.ingest_raw, counters, timeout=30)
    assert why == "" and session.completed  # equal roots: "in sync"
    assert counters.completed == 1 and counters.declined_by_reason == {}


def test_a_declined_session_neither_clears_nor_adds_a_penalty() -> None:
    guard = SyncGuard(base=30, cap=240)
    assert guard.record("p", "timeout", 0) == 30
    assert guard.record("p", "declined", 31) == 0  # the peer said busy: no evidence either way
    assert guard.record("p", "timeout", 32) == 60  # the count went on
    assert "declined" not in PENALIZED


def forged_and_unauthorized() -> tuple[bytes, bytes]:
    """A badly signed op, and a well-signed one its author may not write (no grant)."""
    kb = KB(seed=5)  # the same genesis as `responder`
    op = kb.grant("admin", "x", "member")
    forged = op.raw[:-1] + bytes([op.raw[-1] ^ 1])
    stranger = kb.forge("stranger", "pattern.report", sample_report())
    return forged, stranger.raw


@pytest.mark.parametrize("kind", ["forged", "short"])
async def test_ops_no_honest_replica_holds_end_the_session_as_a_protocol_failure(
    kind: str,
) -> None:
    """An honest peer serves only ops it applied. A frame of badly signed ops (or of
    entries too short to be ops: a 1 MiB frame of 6-byte junk held the event loop
    for seconds, unpenalized) is a protocol failure, so the peer waits."""
    ours, theirs = pipe()
    session, kb = responder()
    counters = SyncCounters()
    forged, _ = forged_and_unauthorized()
    junk = [forged] if kind == "forged" else [b"junk!!"] * 1000
    await theirs.send(hello(kb))
    await theirs.send(messages.encode(Ops(junk)))
    why = await drive(ours, session, kb.ingest_raw, counters, timeout=30)
    assert why == "protocol" and "protocol" in PENALIZED and ours.was_reset
    assert len(kb.replica.meta) == 1  # nothing applied


async def test_ops_merely_invalid_by_the_fold_do_not_end_the_session() -> None:
    ours, theirs = pipe()
    session, kb = responder()
    counters = SyncCounters()
    _, unauthorized = forged_and_unauthorized()
    await theirs.send(hello(kb))
    await theirs.send(messages.encode(Ops([unauthorized])))
    await theirs.send(messages.encode(messages.Bye("done")))
    why = await drive(ours, session, kb.ingest_raw, counters, timeout=30)
    assert why != "protocol" and counters.failed_by_reason.get("protocol") is None


async def test_a_peer_that_holds_the_slot_then_hangs_up_is_penalized(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Closing just before the deadline used to be an ordinary `eof`: one peer id
    could hold the node's one session slot again and again, unpenalized."""
    ours, theirs = pipe()
    session, kb = responder()
    counters = SyncCounters()

    async def hold() -> None:
        await theirs.send(hello(kb))
        for _ in range(5):  # a frame before every timeout, then hang up
            await trio.sleep(20)
            await theirs.send(messages.encode(Ops([])))
        await theirs.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        why = await drive(ours, session, kb.ingest_raw, counters, timeout=30, limit=120)
    assert why == "held" and "held" in PENALIZED
    assert counters.failed_by_reason == {"held": 1}


async def test_a_peer_reading_ops_slowly_then_completing_is_held(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer with an empty store takes our ops at ~3 KiB/s and ends the session
    properly before the deadline, again and again: the slot was ours only for the
    time a 32 KiB/s link would have taken; the rest of each blocked send is idle,
    so such sessions add up to a `held` offence. (Sends of ops counted as
    progress however long they took: every session completed unpenalized.)"""
    kb = store_to_serve(monkeypatch, 64 * 1024)  # 3 frames
    a, b = trio.open_memory_channel[bytes](0)  # no buffer: our sends wait for its reads
    c, d = trio.open_memory_channel[bytes](0)
    ours, theirs = End(a, d), End(c, b)
    peer_kb = MemoryKB(KB(seed=5).genesis)

    class Slow(End):
        async def receive(self) -> bytes:
            frame = await super().receive()
            if isinstance(messages.decode(frame), Ops):
                await trio.sleep(20)  # before it reads on: our next send waits
            return frame

    slow = Slow(c, b)
    counters, theirs_counters = SyncCounters(), SyncCounters()
    async with trio.open_nursery() as nursery:

        async def peer() -> None:
            await drive(
                slow, Session(peer_kb, initiator=True), peer_kb.ingest_raw, theirs_counters,
                timeout=60,
            )  # fmt: skip

        nursery.start_soon(peer)
        outcome = await drive(
            ours, Session(kb, initiator=False), kb.ingest_raw, counters, timeout=30, limit=120
        )
    assert outcome == "" and len(peer_kb.replica.meta) == 301  # completed, all sent
    assert outcome.idle >= 30, outcome.idle  # ~20 s a frame past the ~2 s it needs
    assert SyncGuard(base=30, cap=480).record("peer", outcome, trio.current_time()) == 30
    del theirs
