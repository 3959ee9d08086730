"""Batch format, validator and batcher (no network)."""

from __future__ import annotations

import itertools

import msgpack
import pytest
import trio
from netkit import GENESIS, NET_ID, OTHER_GENESIS, identity, make_op

from gossipmind.core.errors import InvalidOp, NetworkError
from gossipmind.net.gossip import (
    MAX_BATCH_OPS,
    GossipBatcher,
    decode_batch,
    encode_batch,
    make_validator,
)
from gossipmind.net.interface import MAX_GOSSIP_MESSAGE

ALICE = identity(1)


def ops(n: int, *, net: bytes = NET_ID, size: int = 0, start: int = 1) -> list[bytes]:
    return [make_op(ALICE, net, seq, size=size).raw for seq in range(start, start + n)]


def bad_signature(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])  # the signature is the last field


def test_batch_round_trip() -> None:
    raws = ops(3)
    assert decode_batch(encode_batch(raws)) == raws


def test_validator_accepts_good_batch_and_genesis() -> None:
    v = make_validator(NET_ID)
    assert v(encode_batch([GENESIS.raw, *ops(5)]))
    assert v.stats.accepted == 1
    assert v.stats.rejected_total == 0
    assert v.stats.signatures_checked == 6


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"\xff\x00garbage", "encoding"),
        (b"", "encoding"),
        (msgpack.packb({"a": 1}), "envelope"),
        (msgpack.packb([1, 2]), "envelope"),
        (msgpack.packb([]), "empty"),
        (encode_batch([b"not an op"]), "op_encoding"),
        (encode_batch(ops(2) + ops(1)), "duplicate"),
        (encode_batch(ops(1, net=b"\x07" * 32)), "wrong_network"),
        (encode_batch([OTHER_GENESIS.raw]), "wrong_network"),
        (encode_batch([*ops(2), bad_signature(ops(1, start=9)[0])]), "signature"),
        (encode_batch([b"\x90"] * (MAX_BATCH_OPS + 1)), "too_many_ops"),
        (b"\x00" * (MAX_GOSSIP_MESSAGE + 1), "oversized"),
    ],
)
def test_validator_rejects_junk_with_reason(message: bytes, reason: str) -> None:
    v = make_validator(NET_ID)
    assert not v(message)
    assert v.stats.rejected == {reason: 1}
    assert v.stats.accepted == 0


def test_non_canonical_batch_is_rejected() -> None:
    raw = ops(1)[0]
    # bin 32 header for a short byte string: valid msgpack, not canonical
    non_canonical = b"\x91\xc6" + len(raw).to_bytes(4, "big") + raw
    v = make_validator(NET_ID)
    assert msgpack.unpackb(non_canonical) == [raw]
    assert not v(non_canonical)
    assert v.stats.rejected == {"encoding": 1}


def test_signatures_are_verified_once_and_decode_reports_it() -> None:
    v = make_validator(NET_ID, cache_size=4)
    first = encode_batch(ops(3))
    assert v(first)
    assert v(encode_batch(ops(4)))  # three cached, one new
    assert (v.stats.signatures_checked, v.stats.signatures_cached) == (4, 3)
    decoded, carried = v.decode(first)
    assert [op.seq for op, _ in decoded] == [1, 2, 3] and carried == 3
    assert all(verified for _, verified in decoded)
    assert v(encode_batch(ops(4, start=10)))  # evicts seq 1..3 (cache of 4)
    assert [verified for _, verified in v.decode(first)[0]] == [False, False, False]


def test_the_verified_ids_cache_shares_the_ids_of_the_ops_it_hands_on() -> None:
    """The cache of verified ids (up to 65 536) held its own copy of each id, beside
    the one the decoded op (and then the replica) keeps: ~65 B an op, ~4 MiB full
    (found by a 30-minute soak). It keeps the op's own id object now."""
    v = make_validator(NET_ID)
    data = encode_batch(ops(3))
    assert v(data)
    decoded, _ = v.decode(data)
    keys = list(v._verified)
    assert [k == op.id for k, (op, _) in zip(keys, decoded, strict=True)] == [True] * 3
    assert all(k is op.id for k, (op, _) in zip(keys, decoded, strict=True))


def test_ops_verified_before_are_neither_decoded_nor_verified_again() -> None:
    """Under load an op often arrives by sync before gossip brings it: the gossip copy
    costs a hash, not a decode and a verify; ingest is not handed the ops it knows."""
    v = make_validator(NET_ID)
    raws = ops(4)
    v.mark_verified(make_op(ALICE, NET_ID, 1).id)  # e.g. applied after a sync
    assert v(encode_batch(raws[:3]))
    assert (v.stats.signatures_checked, v.stats.signatures_cached) == (2, 1)
    assert v(encode_batch(raws))  # three verified before, one new
    assert (v.stats.signatures_checked, v.stats.signatures_cached) == (3, 4)
    known = {make_op(ALICE, NET_ID, seq).id for seq in (1, 2)}
    decoded, carried = v.decode(encode_batch(raws), known.__contains__)
    assert carried == 4
    assert [(op.seq, verified) for op, verified in decoded] == [(3, True), (4, True)]
    # a verified op does not vouch for the rest of its message
    forged = bad_signature(ops(1, start=7)[0])
    assert not v(encode_batch([raws[0], forged]))
    assert v.stats.rejected == {"signature": 1}
    # nor for a copy of itself in the same message
    assert not v(encode_batch([raws[0], raws[0]]))
    assert v.stats.rejected["duplicate"] == 1


def test_a_bad_op_does_not_poison_the_cache() -> None:
    v = make_validator(NET_ID)
    good = ops(2)
    assert not v(encode_batch([*good, bad_signature(ops(1, start=5)[0])]))
    assert v.is_verified(make_op(ALICE, NET_ID, 1).id)  # good ones were checked first
    assert not v.is_verified(bad_signature(ops(1, start=5)[0]))


def test_decode_refuses_malformed_message() -> None:
    with pytest.raises(InvalidOp):
        make_validator(NET_ID).decode(b"junk")


# --- batcher ------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[float, list[bytes]]] = []

    async def publish(self, data: bytes) -> None:
        assert len(data) <= MAX_GOSSIP_MESSAGE
        self.messages.append((trio.current_time(), decode_batch(data)))


async def test_batcher_sends_one_message_per_interval(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    batcher = GossipBatcher(rec.publish, interval=0.1)
    raws = ops(30)
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        start = trio.current_time()
        for raw in raws:
            await batcher.put(raw)
            await trio.sleep(0.01)  # 30 ops over 0.3 s
        await trio.sleep(0.5)
        assert batcher.pending == 0
        nursery.cancel_scope.cancel()
    sent = [r for _, batch in rec.messages for r in batch]
    assert sent == raws
    assert 3 <= len(rec.messages) <= 4
    times = [t - start for t, _ in rec.messages]
    assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(times))


async def test_batcher_respects_size_bound(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    batcher = GossipBatcher(rec.publish, interval=0.05)
    raws = ops(20, size=60_000)  # ~1.2 MB: several messages of at most 256 KiB
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        for raw in raws:
            batcher.put_nowait(raw)
        assert batcher.put_nowait(raws[0])  # duplicate: accepted, not queued twice
        await batcher.flush()
        nursery.cancel_scope.cancel()
    assert [r for _, b in rec.messages for r in b] == raws
    assert len(rec.messages) == 5  # 4 ops of ~60 KB per 256 KiB message
    assert batcher.stats.duplicates == 1
    assert batcher.stats.ops == 20


async def test_batcher_put_waits_when_full(autojump_clock: trio.abc.Clock) -> None:
    gate = trio.Event()
    published: list[int] = []

    async def slow_publish(data: bytes) -> None:
        await gate.wait()
        published.append(len(decode_batch(data)))

    raws = ops(10, size=60_000)
    batcher = GossipBatcher(slow_publish, interval=0.01, max_pending_bytes=300_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        accepted = 0
        with trio.move_on_after(1):
            for raw in raws:
                await batcher.put(raw)
                accepted += 1
        assert accepted < len(raws)  # blocked: publisher stuck, queue full
        gate.set()
        for raw in raws[accepted:]:
            await batcher.put(raw)
        await batcher.flush()
        nursery.cancel_scope.cancel()
    assert sum(published) == 10


async def test_batcher_survives_publish_errors(autojump_clock: trio.abc.Clock) -> None:
    async def failing(data: bytes) -> None:
        raise NetworkError("no peers")

    batcher = GossipBatcher(failing, interval=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        batcher.put_nowait(ops(1)[0])
        await batcher.flush()
        nursery.cancel_scope.cancel()
    assert batcher.stats.publish_errors == 1
    assert batcher.stats.messages == 0


def test_batcher_refuses_oversized_op() -> None:
    async def nop(data: bytes) -> None:
        return None

    with pytest.raises(NetworkError):
        GossipBatcher(nop).put_nowait(b"x" * (64 * 1024 + 1))


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (msgpack.packb([{}] * 65_536)[:262_144], "too_many_ops"),
        (
            msgpack.packb([[[{} for _ in range(60)] for _ in range(60)] for _ in range(60)]),
            "envelope",
        ),
        (b"\x91" * 262_144, "encoding"),
        (msgpack.packb([b"x" * 300, {}]), "envelope"),
        (msgpack.packb([b"x" * 300])[:-1], "encoding"),
    ],
)
def test_a_message_not_shaped_as_an_array_of_bins_is_never_fully_decoded(
    message: bytes, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shape is read from the headers first: fully decoding (and re-encoding)
    256 KiB of nested containers cost the event loop ~0.3 s per message."""
    from gossipmind.core import encoding

    def no(*_a: object, **_k: object) -> None:
        raise AssertionError("decoded a message whose shape was already wrong")

    monkeypatch.setattr(encoding, "decode", no)
    v = make_validator(NET_ID)
    assert not v(message)
    assert v.stats.rejected == {reason: 1}
