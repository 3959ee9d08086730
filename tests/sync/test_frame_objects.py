"""A sync frame of too many msgpack objects is refused from its headers."""

from __future__ import annotations

import os
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmind.core.errors import SyncError
from gossipmind.sync import messages as m


def objects(v: Any) -> int:
    if isinstance(v, list):
        return 1 + sum(objects(x) for x in v)
    if isinstance(v, dict):
        return 1 + sum(objects(k) + objects(x) for k, x in v.items())
    return 1


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=300)
    | st.binary(max_size=70_000),
    lambda inner: (
        st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=5), inner, max_size=20)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(v=values, limit=st.integers(1, 80))
def test_the_header_count_is_the_object_count(v: Any, limit: int) -> None:
    data = msgpack.packb(v, use_bin_type=True)
    assert m.too_many_objects(data, limit) == (objects(v) > limit)


def test_the_largest_honest_hello_passes() -> None:
    vv = {os.urandom(32): 1 + i for i in range(m.MAX_AUTHORS)}
    heads = [os.urandom(32) for _ in range(m.MAX_IDS)]
    peers = [f"/ip4/127.0.0.1/tcp/{4000 + i}" for i in range(m.MAX_PEERS)]
    frame = m.encode(m.Hello(os.urandom(32), vv, heads, os.urandom(32), 10**6, peers))
    assert not m.too_many_objects(frame)
    assert len(m.decode(frame).vv) == m.MAX_AUTHORS


@pytest.mark.parametrize("item", [b"\x90", b"\x91\x90", b"\x80", b"\xc0"])
def test_a_frame_of_a_million_tiny_objects_is_refused_before_decoding(item: bytes) -> None:
    count = (m.MAX_FRAME - 16) // len(item)
    frame = b"\x82\xa3ops\xdd" + count.to_bytes(4, "big") + item * count + b"\xa1t\xa3ops"
    assert len(frame) <= m.MAX_FRAME
    with pytest.raises(SyncError, match="msgpack objects"):
        m.decode(frame)


def test_truncated_or_odd_input_is_left_to_the_decoder() -> None:
    for data in (b"", b"\xdd\xff\xff\xff", b"\xc1", b"\x92\x01"):
        assert not m.too_many_objects(data, 10)
        with pytest.raises(SyncError):
            m.decode(data)
