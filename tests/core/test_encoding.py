"""Canonical msgpack: one encoding per value, everything else rejected."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipmind.core import encoding
from gossipmind.core.errors import EncodingError

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
def test_roundtrip_is_identity(value: object) -> None:
    raw = encoding.encode(value)
    assert encoding.decode(raw) == value
    assert encoding.encode(encoding.decode(raw)) == raw


@given(st.dictionaries(st.text(max_size=8), st.integers(0, 1000), min_size=2, max_size=6))
def test_map_keys_are_sorted_by_utf8(value: dict[str, int]) -> None:
    raw = encoding.encode(value)
    keys = list(msgpack.unpackb(raw, raw=False).keys())
    assert keys == sorted(keys, key=lambda k: k.encode())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (msgpack.packb(1.5), "floats"),
        (msgpack.packb({"b": 1, "a": 2}), "non-canonical"),
        (b"\xcc\x01", "non-canonical"),  # 1 as uint8 instead of a fixint
        (b"\xd9\x01a", "non-canonical"),  # "a" as str8 instead of fixstr
        (msgpack.packb([1]) + b"\x00", "trailing"),
        (b"\x91", "not valid msgpack"),  # truncated array
        (b"\xc1", "not valid msgpack"),  # never-used byte
        (b"", "empty"),
        (b"\x91" * 40 + b"\x01", "nesting"),
        (msgpack.packb({1: 2}), "not valid msgpack"),
        (msgpack.packb(msgpack.ExtType(1, b"x")), "ext type"),
    ],
)
def test_rejects_non_canonical_and_foreign_types(raw: bytes, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        encoding.decode(raw)


def test_size_limit_is_enforced_before_parsing() -> None:
    with pytest.raises(EncodingError, match="exceeds the limit"):
        encoding.decode(encoding.encode(b"x" * 100), max_size=50)


@pytest.mark.parametrize(
    "bad",
    [
        1.0,
        {1: 2},
        {"a": 1, 2: 3},
        object(),
        2**64,
        -(2**63) - 1,
        {"a": [1.5]},
        [{"k": 2**64}],
        "\ud800",
        {"\ud800": 1},
        {"k": "\udfff"},
    ],  # lone surrogates: not UTF-8
)
def test_encode_refuses_what_cannot_be_canonical(bad: object) -> None:
    with pytest.raises(EncodingError):
        encoding.encode(bad)


def test_an_integer_keeps_its_sign_family_even_where_the_other_is_as_short() -> None:
    """protocol.md §2 rule 2: an implementation that broke the tie toward int16 for
    256..32767 (as short as uint16) rejected every op of the doc's vectors."""
    assert encoding.encode(300) == bytes.fromhex("cd012c") and encoding.encode(-1) == b"\xff"
    assert encoding.encode(-33) == bytes.fromhex("d0df")
    for signed in ("d1012c", "d0ff", "d200010000", "d100ff"):  # int16 300, int8 -1, ...
        with pytest.raises(EncodingError):
            encoding.decode(bytes.fromhex(signed))
