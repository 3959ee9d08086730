"""docs/protocol.md §10 test vectors match this implementation."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gossipmind.core import encoding
from gossipmind.core.errors import EncodingError
from gossipmind.core.identity import verify
from gossipmind.core.policy import Policy
from gossipmind.testing.vectors import check, vectors

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _block(tag: str) -> str:
    match = re.search(rf"```json{tag}\n(.*?)\n```", DOC.read_text(), re.DOTALL)
    assert match, f"no ```json{tag} block in {DOC}"
    return match.group(1)


def test_published_vectors_verify_and_give_the_published_root() -> None:
    published = json.loads(_block(" vectors"))
    check(published)


def test_published_vectors_are_what_the_implementation_produces() -> None:
    assert json.loads(_block(" vectors")) == vectors()


def test_published_default_policy_is_the_default() -> None:
    assert json.loads(_block("")) == Policy().to_body()


STRICT = Path(__file__).resolve().parent / "vectors_strict.json"


def test_strict_ed25519_vectors() -> None:
    """protocol §3.2: libsodium's strict, cofactorless verification."""
    for case in json.loads(STRICT.read_text())["ed25519"]:
        got = verify(
            bytes.fromhex(case["public"]),
            bytes.fromhex(case["message"]),
            bytes.fromhex(case["signature"]),
        )
        assert got is case["valid"], case["name"]


def test_strict_encoding_vectors() -> None:
    """protocol §2: nesting depth, UTF-8 and map-key rules."""
    for case in json.loads(STRICT.read_text())["encoding"]:
        try:
            encoding.decode(bytes.fromhex(case["bytes"]))
            got = True
        except EncodingError:
            got = False
        assert got is case["valid"], case["name"]
