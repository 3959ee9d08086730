"""Identities and key files (pure part; file permissions are tested with the store)."""

from __future__ import annotations

import pytest

from gossipmind.core.errors import IdentityError
from gossipmind.core.identity import Identity, dump_key, is_encrypted, load_key, verify


def test_sign_and_verify() -> None:
    ident = Identity(b"\x07" * 32)
    sig = ident.sign(b"hello")
    assert verify(ident.public, b"hello", sig)
    assert not verify(ident.public, b"hellO", sig)
    assert not verify(Identity(b"\x08" * 32).public, b"hello", sig)
    assert not verify(ident.public, b"hello", sig[:-1])


def test_plain_key_file_roundtrip() -> None:
    ident = Identity(b"\x01" * 32)
    data = dump_key(ident, None, b"s" * 16, b"n" * 12)
    assert not is_encrypted(data)
    assert load_key(data, None) == ident


def test_encrypted_key_file_needs_the_right_passphrase() -> None:
    ident = Identity(b"\x02" * 32)
    data = dump_key(ident, "correct horse", b"s" * 16, b"n" * 12)
    assert is_encrypted(data)
    assert ident.seed not in data
    assert load_key(data, "correct horse") == ident
    with pytest.raises(IdentityError, match="wrong passphrase"):
        load_key(data, "battery staple")
    with pytest.raises(IdentityError, match="passphrase is required"):
        load_key(data, None)


@pytest.mark.parametrize("junk", [b"", b"\x00\x01", b"\x81\xa1v\x02"])
def test_junk_key_files_are_refused(junk: bytes) -> None:
    with pytest.raises(IdentityError):
        load_key(junk, None)


def test_repr_never_shows_the_seed() -> None:
    ident = Identity(b"\x03" * 32)
    assert ident.seed.hex() not in repr(ident)
