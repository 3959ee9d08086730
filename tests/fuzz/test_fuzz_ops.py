"""Fuzz the op decoder and the canonical msgpack decoder.

Properties: the only exceptions are ``InvalidOp`` (ops) and ``EncodingError``
(msgpack); whatever is accepted re-encodes to the very same bytes (no
malleability), and a mutated op that still decodes never carries a valid signature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import msgpack
from fuzzkit import fuzz_settings, junk, mutants, random_msgpack, seed_ops
from hypothesis import event, given
from hypothesis import strategies as st

from gossipmind.core import encoding
from gossipmind.core import ops as opsmod
from gossipmind.core.errors import EncodingError, InvalidOp

SEEDS = seed_ops()


def test_the_seeds_are_valid_ops_of_every_kind() -> None:
    kinds = {opsmod.decode(raw).kind for raw in SEEDS}
    assert kinds == set(opsmod.KINDS)
    assert all(opsmod.decode(raw).verify_signature() for raw in SEEDS)


def check_op(raw: bytes, tell: Callable[[str], object] = event) -> None:
    try:
        op = opsmod.decode(raw)
    except InvalidOp as exc:
        assert exc.code in {"oversized", "encoding", "envelope", "version", "unknown_kind"}
        tell(f"op rejected: {exc.code}")
        return
    tell("op decoded" + (" (a seed)" if raw in SEEDS else ""))
    assert op.raw == raw
    assert encoding.encode([1, op.net, op.kind, op.author, op.seq, op.lamport, list(op.deps),
                            op.ts, op.body, op.sig]) == raw  # fmt: skip
    assert op.id == hashlib.blake2b(raw, digest_size=32).digest()
    if raw not in SEEDS:
        assert not op.verify_signature(), "a mutated op kept a valid signature"


def check_msgpack(raw: bytes) -> None:
    try:
        value = encoding.decode(raw)
    except EncodingError:
        return
    assert encoding.encode(value) == raw


@fuzz_settings(1000)
@given(mutants(SEEDS))
def test_mutated_ops(raw: bytes) -> None:
    check_op(raw)
    check_msgpack(raw)


@fuzz_settings(500)
@given(junk(SEEDS) | random_msgpack)
def test_junk_and_random_msgpack(raw: bytes) -> None:
    check_op(raw)
    check_msgpack(raw)


@fuzz_settings(200)
@given(st.sampled_from(SEEDS), st.data())
def test_every_truncation_and_single_bit_flip_of_a_seed_is_rejected(
    raw: bytes, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    flipped = bytearray(raw)
    flipped[bit // 8] ^= 1 << (bit % 8)
    for bad in (raw[:cut], bytes(flipped), raw + b"\x00"):
        try:
            op = opsmod.decode(bad)
        except InvalidOp:
            continue
        assert not op.verify_signature()  # decodes (a flip inside a string) but is forged


def test_size_and_depth_limits() -> None:
    deep = b"\x91" * 10_000 + b"\x01"
    for raw in (deep, b"\xdc\xff\xff" + b"\xc0" * 65535, b"\xc6\xff\xff\xff\xff", b"\xdd" * 8):
        check_op(raw, tell=print)
        check_msgpack(raw)
    big = encoding.encode([b"x" * (opsmod.MAX_OP_SIZE + 1)])
    try:
        opsmod.decode(big)
    except InvalidOp as exc:
        assert exc.code == "oversized"


def test_a_bin_map_key_is_an_encoding_error() -> None:
    """Found by this fuzzer: msgpack's strict_map_key lets bin keys through, and the
    canonical check then raised AttributeError (an op body or a sync frame with a
    bin key could crash a validator or a sync session)."""
    for raw in (b"\x81\xc4\x00\x00", b"\x91\x81\xc4\x01k\xc0"):
        try:
            encoding.decode(raw)
        except EncodingError as exc:
            assert "map key" in str(exc)
        else:
            raise AssertionError("accepted a bin map key")
    op = opsmod.decode(SEEDS[1])
    envelope = [1, op.net, op.kind, op.author, op.seq, op.lamport, list(op.deps), op.ts,
                {**op.body, b"k": 1}, op.sig]  # fmt: skip
    bad = msgpack.packb(envelope, use_bin_type=True)
    try:
        opsmod.decode(bad)
    except InvalidOp as exc:
        assert exc.code == "encoding"
    else:
        raise AssertionError("accepted an op with a bin map key")


def test_a_msgpack_timestamp_is_an_encoding_error() -> None:
    """Found by the atheris harness: ext type -1 is decoded by msgpack itself (a
    Timestamp, never seen by ext_hook) and re-encodes identically, so it passed the
    canonical check; encode() then refused the decoded value (an EncodingError far
    from the decoder, e.g. while a store persisted a fold row holding it)."""
    for raw in (b"\xd6\xff\x00\x00\x00\x00", b"\x91\xd6\xff\xff\xff\xff\x00",
                b"\x81\xa1a\xd7\xff" + bytes(8), b"\xc7\x0c\xff" + bytes(12)):  # fmt: skip
        try:
            encoding.decode(raw)
        except EncodingError as exc:
            assert "timestamp" in str(exc)
        else:
            raise AssertionError(f"accepted a timestamp: {raw.hex()}")
