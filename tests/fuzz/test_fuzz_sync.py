"""Fuzz the sync frame decoder and the session state machine.

Properties: ``sync.messages.decode`` raises nothing but ``SyncError``; whatever it
accepts encodes to a stable normal form; a session fed junk frames (or valid frames
in a hostile order) raises nothing but ``SyncError`` and never lets a peer make it
send without bound.
"""

from __future__ import annotations

import itertools

import msgpack
from fuzzkit import fuzz_settings, junk, seed_frames, seed_ops
from hypothesis import event, given
from hypothesis import strategies as st

from gossipmind.core import encoding
from gossipmind.core import ops as opsmod
from gossipmind.core.errors import SyncError
from gossipmind.sync import messages as sm
from gossipmind.sync.session import Session
from gossipmind.testing.memory import MemoryKB

FRAMES = seed_frames()


def decode(frame: bytes) -> sm.Message | None:
    try:
        msg = sm.decode(frame)
    except SyncError as exc:
        event(f"rejected: {str(exc).split(':')[0][:32]}")
        return None
    event(f"accepted: {type(msg).__name__}")
    once = sm.encode(msg)
    assert sm.encode(sm.decode(once)) == once
    return msg


@fuzz_settings(800)
@given(junk(FRAMES))
def test_junk_frames_raise_only_sync_errors(frame: bytes) -> None:
    decode(frame)


fields = st.sampled_from(
    ["t", "v", "net", "vv", "heads", "root", "count", "peers", "ops", "want", "reason", "x"]
)
tags = st.sampled_from(["hello", "ops", "sent", "end", "bye", "nope", ""]) | st.text(max_size=5)
ids = st.binary(min_size=32, max_size=32) | st.binary(max_size=40)
canonical_values = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | ids
    | st.lists(ids, max_size=5)
    | st.lists(st.tuples(ids, st.integers(-1, 2**64 - 1)).map(list), max_size=4)
    | st.lists(st.text(max_size=300) | st.integers(-5, 2**64 - 1), max_size=20)
    | st.lists(st.binary(max_size=100), max_size=5)
)


REQUIRED = {
    "hello": ["v", "net", "vv", "heads", "root", "count", "peers"],
    "ops": ["ops"],
    "sent": [],
    "end": ["want"],
    "bye": ["reason"],
}


@st.composite
def shaped(draw: st.DrawFn) -> bytes:
    """A canonical map with a known tag and (mostly) exactly its fields, wrong values."""
    t = draw(st.sampled_from(sorted(REQUIRED)) | tags)
    exact = t in REQUIRED and draw(st.integers(0, 4)) > 0
    names = REQUIRED[t] if exact else draw(st.lists(fields, max_size=9, unique=True))
    doc: dict[str, object] = {n: draw(canonical_values) for n in names}
    if t == "hello" and draw(st.booleans()):
        doc["v"] = 1  # get past the version check
    doc["t"] = t
    return encoding.encode(doc)


@fuzz_settings(500)
@given(shaped())
def test_frames_with_the_right_shape_and_wrong_contents(frame: bytes) -> None:
    """Canonical maps that reach the per-type checks: right tag, wrong or missing fields."""
    decode(frame)


def test_a_bin_map_key_in_a_frame_is_a_sync_error() -> None:
    for frame in (b"\x81\xc4\x00\x00", msgpack.packb({"reason": "x", "t": "bye", b"k": 1})):
        assert decode_only(frame) is None


def decode_only(frame: bytes) -> sm.Message | None:
    try:
        return sm.decode(frame)
    except SyncError:
        return None


def source() -> MemoryKB:
    raws = seed_ops()
    kb = MemoryKB(opsmod.decode(raws[0]))
    kb.ingest_raw(raws[1:])
    return kb


NET = opsmod.decode(seed_ops()[0]).id
HELLOS = (
    sm.encode(sm.Hello(NET, {}, [], b"\x00" * 32, 0)),  # an empty peer: send it everything
    sm.encode(sm.Hello(NET, {b"\x01" * 32: 5}, [b"\x02" * 32], b"\x03" * 32, 9)),
    sm.encode(sm.End([opsmod.op_id(r) for r in seed_ops()[:3]])),
)


@fuzz_settings(300)
@given(
    st.booleans(),
    st.lists(
        st.sampled_from(FRAMES + HELLOS) | junk(FRAMES + HELLOS) | st.sampled_from(HELLOS),
        min_size=1,
        max_size=12,
    ),
)
def test_a_session_fed_hostile_frames_fails_only_with_sync_errors(
    initiator: bool, frames: list[bytes]
) -> None:
    """Drive a session like the node does (ingest received ops before the next frame)."""
    kb = source()
    session = Session(kb, initiator=initiator)
    sent = sum(1 for _ in session.start())
    try:
        for frame in frames:
            step = session.receive(sm.decode(frame))
            kb.ingest_raw(step.ops)  # junk ops are rejected by the replica, never raised
            sent += sum(1 for _ in itertools.islice(step.send, 10_000))
            if step.done:
                break
    except SyncError as exc:
        event(f"session stopped: {str(exc)[:30]}")
    assert sent < 10_000
