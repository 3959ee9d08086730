import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmind.core.errors import ConfigError
from gossipmind.learn.redact import redact
from gossipmind.learn.template import MAX_TEMPLATE, WILDCARD, Drain, canonical


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("took 12 ms", "took <*> ms"),
        ("took 12.5 ms", "took <*> ms"),
        ("at 2024-01-15T10:30:00.123Z and 2024-01-15 10:30:00", "at <*> and <*>"),
        ("Jan 15 10:30:00 host sshd[1234]: closed", "<*> host sshd[<*>]: closed"),
        ("No such customer: 'cus_NffrFeUfNVHib'", "No such customer: '<*>'"),
        ("Charge ch_3NffrFeUfNV2Hib was refunded", "Charge ch_<*> was refunded"),
        ("amount -$12.50 over 1,000.00 USD", "amount <*> over <*>"),
        ("can't reach customer's db 'x'", "can't reach customer's db '<*>'"),
        ("addr 0x7ffe1234 bad", "addr <*> bad"),
        ("mail <email> from <ip>:<num>", "mail <*> from <*>"),
        ("  many   spaces\n\tand\x00controls ", "many spaces and controls"),
        ("[Errno -2] Name or service not known", "[Errno <*>] Name or service not known"),
    ],
)
def test_masks_variable_parts(text: str, expected: str) -> None:
    assert canonical(text) == expected


def test_keeps_identifier_keys_and_error_codes_but_not_other_values() -> None:
    out = canonical(
        "{'error': {'message': 'Rate limit for org-abc', 'code': 'rate_limit_exceeded'}}"
    )
    assert out == "{'error': {'message': '<*>', 'code': 'rate_limit_exceeded'}}"
    out = canonical('{"type": "invalid_request_error", "user": "john_smith"}')
    assert out == '{"type": "invalid_request_error", "user": "<*>"}'


def test_same_event_with_different_parameters_gives_one_template() -> None:
    a = canonical(
        redact(
            "Order 1234567 for jane@x.io failed after 3.2s "
            "(req 3fa85f64-5717-4562-b3fc-2c963f66afa6)"
        )
    )
    b = canonical(
        redact(
            "Order 42 for bob@example.org failed after 12s "
            "(req 123e4567-e89b-12d3-a456-426614174000)"
        )
    )
    assert a == b == "Order <*> for <*> failed after <*> (req <*>)"


def test_different_events_give_different_templates() -> None:
    assert canonical("Read timed out") != canonical("Connect timed out")
    assert canonical("Your card was declined.") != canonical("Your card has insufficient funds.")


def test_bounded_length_without_broken_wildcards() -> None:
    assert len(canonical("word " * 1000)) <= MAX_TEMPLATE
    out = canonical("a1" * 2000)
    assert out == WILDCARD
    out = canonical("x" * 3000)
    assert len(out) == MAX_TEMPLATE
    out = canonical("ab<*>" * 500)
    assert len(out) <= MAX_TEMPLATE
    assert not out.endswith("<") and not out.endswith("<*")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000))
def test_canonical_is_total_bounded_and_encodable(text: str) -> None:
    out = canonical(text)
    assert len(out) <= MAX_TEMPLATE
    out.encode("utf-8")  # no lone surrogates
    assert out == out.strip()
    assert not any(ch.isdigit() for ch in out)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_canonical_is_idempotent(text: str) -> None:
    once = canonical(text)
    assert canonical(once) == once


def test_drain_merges_variants_and_is_deterministic() -> None:
    msgs = [
        "user alice not found",
        "user bob not found",
        "order <*> not found",
        "user carol not found",
        "user alice was deleted",
    ]

    def run() -> list[tuple[int, str]]:
        d = Drain()
        return [(c.id, c.template) for c in (d.add(canonical(m)) for m in msgs)]

    out = run()
    assert out == run()
    assert out[3] == (0, "user <*> not found")
    assert out[2][0] != 0 and out[4][0] != 0
    d = Drain()
    for m in msgs:
        d.add(m)
    match = d.match("user dave not found")
    assert match is not None
    assert match.template == "user <*> not found"
    assert match.size == 3
    assert d.match("something else entirely") is None
    assert len(d.clusters) == 3


def test_drain_fingerprint_independence() -> None:
    # The canonical template of a message does not depend on what a Drain has seen.
    d = Drain()
    for m in ["user alice not found", "user bob not found"]:
        d.add(canonical(m))
    assert canonical("user alice not found") == "user alice not found"


def test_drain_limits() -> None:
    d = Drain(max_clusters=2, max_children=1)
    d.add("a x")
    d.add("b y")
    over = d.add("c z q")
    assert over.id == -1
    assert len(d.clusters) == 2
    with pytest.raises(ConfigError):
        Drain(depth=2)
    with pytest.raises(ConfigError):
        Drain(similarity=1.5)


def test_canonical_is_idempotent_on_every_short_string_of_signs_digits_and_separators() -> None:
    """Hypothesis found "--0" → "-<*>" → "<*>": the sign rule dropped only the
    last of a run of signs. Every string of up to 5 of these characters now gives
    a template that canonical() leaves as it is."""
    for n in range(1, 6):
        for chars in itertools.product("-+0a >_.:", repeat=n):
            once = canonical("".join(chars))
            assert canonical(once) == once, ("".join(chars), once)
    assert canonical("--0") == canonical("-0") == "<*>"
    assert canonical("a--0") == "a-<*>"
