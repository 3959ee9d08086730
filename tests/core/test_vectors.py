"""docs/protocol.md §10 test vectors match this implementation."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
