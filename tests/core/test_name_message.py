"""The rejection detail for a bad name states the rule the check applies (protocol §4)."""

from __future__ import annotations

import pytest

from gossipmind.core.checks import name
from gossipmind.core.errors import SchemaError


def test_star_is_allowed_inside_a_name_and_the_message_says_so() -> None:
    check = name()
    assert check("a*b", "operation") == "a*b"  # valid: `*` after the first character
    assert check("*", "scope") == "*"
    with pytest.raises(SchemaError) as caught:
        check("probe.nl\n", "operation")
    # The message once showed [a-z0-9][a-z0-9._/-]*, which rejects `a*b` and `*`:
    # an implementer reading rejection details got the wrong rule.
    assert r"\*|[a-z0-9][a-z0-9._*/-]*" in str(caught.value)
