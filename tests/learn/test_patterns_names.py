"""Ids in service and operation names reached shared ``pattern.report`` ops (s9 privacy
review): ``charge cus_N3xT8kLq`` became the operation ``charge_cus_n3xt8klq`` on every
replica. The template masks such words in a message; names were only redacted. A name
still keeps its words (``hunter2pw`` or ``bob`` in a name is shared: a name is meant to
be the same for every call).
"""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipmind.learn.patterns import Failure, normalise_name, reduce


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("charge cus_N3xT8kLq", "charge_cus_id"),
        ("order_1234", "order_num"),
        ("charge cus_A2A22222A", "charge_cus_id"),  # redaction masked part of it first
        ("refund a3f9c2", "refund_id"),
        ("lookup NffrFeUfNVHib", "lookup_id"),
        # names with digits that are no id stay
        ("ec2.describe", "ec2.describe"),
        ("s3.put_object", "s3.put_object"),
        ("v1beta1/pods", "v1beta1/pods"),
        ("sha256", "sha256"),
        ("utf8mb4", "utf8mb4"),
        ("x86_64", "x86_64"),
        ("oauth2", "oauth2"),
        ("XMLHttpRequest", "xmlhttprequest"),
    ],
)
def test_ids_in_names_are_masked(name: str, expected: str) -> None:
    assert normalise_name(name) == expected


@settings(max_examples=200, deadline=None)
@given(
    cid=st.text(
        alphabet="abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=8, max_size=14
    ).filter(lambda s: sum(a.isdigit() != b.isdigit() for a, b in itertools.pairwise(s)) >= 4)
)
def test_a_customer_id_in_an_operation_name_is_not_shared(cid: str) -> None:
    reduced = reduce(Failure("payments", f"charge cus_{cid}", "TimeoutError", "timed out"))
    assert cid.lower() not in reduced.operation
    other = reduce(Failure("payments", "charge cus_Zz9Yy8Xx7W", "TimeoutError", "timed out"))
    assert reduced.pattern == other.pattern  # one pattern for every customer


@pytest.mark.parametrize(
    "name",
    ["GetBucketAcl", "PutObjectAcl", "BatchGetItem", "getUserById", "getOrderById"],
)
def test_camel_case_operation_names_keep_their_words(name: str) -> None:
    """looks_random takes a CamelCase name with short words (By, Id, Acl) for an id:
    every such operation of a service became ``id`` and shared one pattern (s9 review)."""
    assert normalise_name(name) == name.lower()


def test_two_operations_of_a_service_are_two_patterns() -> None:
    a = reduce(Failure("s3", "GetBucketAcl", "TimeoutError", "timed out"))
    b = reduce(Failure("s3", "PutObjectAcl", "TimeoutError", "timed out"))
    assert a.pattern != b.pattern
