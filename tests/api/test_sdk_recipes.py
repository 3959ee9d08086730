"""Accepted fixes that made the agent applying them worse off, against a real node.

A payments call the agent did not mark ``idempotent=False`` (the default is True)
failed without a key; the keyed fix then retried it with a fresh key, so a charge
that had gone through before its timeout was made twice. The node now tells the
SDK which fixes are for a non-idempotent scope (policy ``non_idempotent_scopes``),
and such a call is never retried after an attempt without a key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from livenode import SLOW, LiveNode, until

from gossipmind.api.client import Client


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    live = LiveNode(tmp_path_factory.mktemp("recipes-node")).start()
    yield live
    live.stop()


def provider() -> tuple[list[str | None], Any]:
    """A payment provider: the first charge goes through, but its answer times out."""
    charges: list[str | None] = []

    def charge(customer: str, amount: int, idempotency_key: str | None = None) -> dict[str, Any]:
        charges.append(idempotency_key)
        if len(charges) == 1:
            raise TimeoutError(f"charge for {customer} timed out after 30000 ms")
        return {"status": "succeeded", "amount": amount}

    return charges, charge


def test_an_unmarked_payments_call_is_not_charged_twice(node: LiveNode) -> None:
    client = Client(node.dir, timeout=SLOW)
    try:
        assert client.wait_ready(SLOW)
        until(lambda: client._cached(node.pattern) is not None, "the fix in the cache")
        fix = client._cached(node.pattern)
        assert fix is not None and fix.non_idempotent  # payments, by the default policy
        charges, charge = provider()

        @client.resilient(service="payments", operation="charge")  # idempotent=True
        def pay(customer: str, amount: int, idempotency_key: str | None = None) -> Any:
            return charge(customer, amount, idempotency_key=idempotency_key)

        with pytest.raises(TimeoutError):
            pay("someone@example.com", 4999)
        assert charges == [None]  # one charge: no retry with a key the first did not carry

        acharges, acharge = provider()

        @client.resilient(service="payments", operation="charge")
        async def apay(customer: str, amount: int, idempotency_key: str | None = None) -> Any:
            return acharge(customer, amount, idempotency_key=idempotency_key)

        with pytest.raises(TimeoutError):
            asyncio.run(apay("someone@example.com", 4999))
        assert acharges == [None]

        # marked as the docs say, the same call runs under the key from its first attempt
        kcharges, kcharge = provider()

        @client.resilient(service="payments", operation="charge", idempotent=False)
        def kpay(customer: str, amount: int, idempotency_key: str | None = None) -> Any:
            return kcharge(customer, amount, idempotency_key=idempotency_key)

        assert kpay("someone@example.com", 4999)["status"] == "succeeded"
        assert len(kcharges) == 2 and kcharges[0] is not None and len(set(kcharges)) == 1
    finally:
        client.close()
