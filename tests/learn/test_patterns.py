import dataclasses

import pytest

from gossipmind.core import checks
from gossipmind.core.errors import SchemaError
from gossipmind.core.schema import pattern_id
from gossipmind.learn.patterns import (
    MAX_MS,
    Failure,
    normalise_name,
    reduce,
    short_type,
    template_of,
)
from gossipmind.learn.taxonomy import Rule


def _failure(**kw: object) -> Failure:
    base = Failure(
        service="payments",
        operation="charge",
        exc_type="httpx.ReadTimeout",
        message="Read timed out after 30.0s charging card 4111 1111 1111 1111 for jane@x.io",
        status=None,
        context={"amount": 1250, "customer": {"email": "jane@x.io"}},
        latency_ms=30_000,
        retry_after_ms=None,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_reduce_produces_a_report_identity() -> None:
    r = reduce(_failure())
    assert r.service == "payments"
    assert r.operation == "charge"
    assert r.error_class == "timeout"
    assert r.template == "ReadTimeout: Read timed out after <*> charging card <*> for <*>"
    assert r.shape == "{amount:int,customer:{email:str}}"
    assert r.pattern == pattern_id("payments", "charge", "timeout", r.template)
    assert r.latency_ms == 30_000
    assert r.status is None and r.retry_after_ms is None


def test_module_path_and_status_are_not_part_of_the_fingerprint() -> None:
    a = reduce(_failure(exc_type="httpx.ReadTimeout", status=None))
    b = reduce(_failure(exc_type="ReadTimeout", status=599))
    c = reduce(_failure(exc_type="x.y.ReadTimeout", status=504))
    assert a.pattern == b.pattern == c.pattern
    assert (b.status, c.status) == (599, 504)


def test_exception_name_is_part_of_the_fingerprint() -> None:
    a = reduce(_failure(exc_type="KeyError", message="'total'"))
    b = reduce(_failure(exc_type="IndexError", message="'total'"))
    assert a.pattern != b.pattern


def test_rules_change_the_class_and_so_the_pattern() -> None:
    plain = reduce(_failure())
    ruled = reduce(_failure(), [Rule("server_error", type_pattern="ReadTimeout")])
    assert ruled.error_class == "server_error"
    assert ruled.pattern != plain.pattern


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Payments", "payments"),
        ("GET /v1/Charges", "get_/v1/charges"),
        ("charge for jane@x.io", "charge_for_email"),
        ("/users/jane.doe/orders", "users/name/orders"),
        ("Zahlung-Bestätigen", "zahlung-bestatigen"),
        ("___", "unknown"),
        ("", "unknown"),
        ("€€€", "unknown"),
        ("a" * 200, "a" * 64),
        ("x" * 300 + " 10.0.0.1", "x" * 64),
    ],
)
def test_normalise_name(raw: str, expected: str) -> None:
    out = normalise_name(raw)
    assert out == expected
    checks.name(64)(out, "name")


def test_short_type_and_template_of() -> None:
    assert short_type("requests.exceptions.ConnectionError") == "ConnectionError"
    assert short_type("<class 'httpx.ReadTimeout'>") == "ReadTimeout"
    assert short_type(" weird type! ") == ""
    assert short_type("errors.Err_3fa85f64-5717-4562-b3fc-2c963f66afa6") == ""
    assert short_type("errors.E_eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl") == ""
    assert short_type("x." + "A" * 65) == ""
    assert template_of("", "boom 42") == "boom <*>"
    assert template_of("asyncio.TimeoutError", "") == "TimeoutError:"


def test_numbers_are_bounded_and_checked() -> None:
    r = reduce(_failure(status=True, latency_ms=-5, retry_after_ms=10**12))
    assert r.status is None
    assert r.latency_ms is None
    assert r.retry_after_ms == MAX_MS
    r = reduce(_failure(status=700, latency_ms=float("nan"), retry_after_ms=float("inf")))
    assert (r.status, r.latency_ms, r.retry_after_ms) == (None, None, MAX_MS)
    r = reduce(_failure(latency_ms=12.7, retry_after_ms="5"))
    assert (r.latency_ms, r.retry_after_ms) == (12, None)


def test_text_fields_must_be_strings() -> None:
    with pytest.raises(SchemaError, match="message"):
        reduce(_failure(message=None))
    with pytest.raises(SchemaError, match="service"):
        reduce(_failure(service=3))


def test_reduce_is_deterministic() -> None:
    assert reduce(_failure()) == reduce(_failure())
