"""Strictness of sync frames beyond shape: exact types and lengths."""

from __future__ import annotations

import pytest

from gossipmind.core import encoding
from gossipmind.core.errors import SyncError
from gossipmind.sync import messages


def hello(**over: object) -> bytes:
    doc = {
        "t": "hello",
        "v": 1,
        "net": b"n" * 32,
        "vv": [],
        "heads": [],
        "root": b"r" * 32,
        "count": 1,
        "peers": [],
    }
    doc.update(over)
    return encoding.encode(doc)


def test_a_valid_hello_decodes() -> None:
    assert isinstance(messages.decode(hello()), messages.Hello)


@pytest.mark.parametrize(
    "over",
    [{"v": True}, {"v": 2}, {"root": b"r" * 31}, {"net": b"n" * 33}, {"count": -1}, {"peers": [1]}],
)
def test_hellos_with_wrong_types_or_lengths_are_refused(over: dict[str, object]) -> None:
    with pytest.raises(SyncError):
        messages.decode(hello(**over))


def test_a_hello_never_carries_an_address_its_receiver_would_refuse() -> None:
    short = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf"
    long = "/dns4/" + "a" * 240 + ".example/tcp/4001/p2p/12D3KooW"  # > 256 characters
    with pytest.raises(SyncError, match="256"):
        messages.decode(hello(peers=[long]))
    sent = messages.Hello(b"n" * 32, {}, [], b"r" * 32, 1, [long, short])
    got = messages.decode(messages.encode(sent))
    assert isinstance(got, messages.Hello) and got.peers == [short]


def test_a_bye_reason_of_over_200_characters_is_refused() -> None:
    """Only the encoder cut a reason to 200 characters: a peer's own encoder sent
    256 KiB reasons, each kept whole by the receiving node (see tests/node)."""
    ok = encoding.encode({"t": "bye", "reason": "x" * 200})
    assert messages.decode(ok) == messages.Bye("x" * 200)
    with pytest.raises(SyncError, match="200"):
        messages.decode(encoding.encode({"t": "bye", "reason": "x" * 201}))
    with pytest.raises(SyncError, match="200"):
        messages.decode(encoding.encode({"t": "bye", "reason": "x" * 512 * 1024}))
    ours = messages.encode(messages.Bye("y" * 1000))  # we never send what we refuse
    assert messages.decode(ours) == messages.Bye("y" * 200)
