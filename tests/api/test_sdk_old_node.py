"""This SDK against a node of the previous release (7a06e9e), over HTTP.

Such a node sends no ``non_idempotent`` with its fixes (it came with this release),
so the SDK took every fix for an idempotent one: a payments call not marked
``idempotent=False`` that failed without a key was retried under the keyed fix, and
a charge that had gone through before its answer timed out was made twice, the
double charge the field was added to prevent. Without the field the SDK now takes a
fix that carries an idempotency key for a non-idempotent one (docs/operations.md
§10). The node's answer is replayed from ``tests/fixtures/upgrade`` (its README
says how the old code made it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gossipmind.api.client import Client
from gossipmind.api.records import Fix
from gossipmind.learn.patterns import Failure, reduce

OLD_FIX = json.loads(
    (Path(__file__).parent.parent / "fixtures" / "upgrade" / "old_node_fix.json").read_text()
)
CHARGE = Failure(
    "payments", "charge", "TimeoutError", "charge for jane@example.com timed out after 30000 ms"
)


class OldNode(BaseHTTPRequestHandler):
    """Answers as the 7a06e9e node did: its recorded fix for the charge pattern."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith(f"/v1/fix?pattern={OLD_FIX['pattern']}"):
            self._answer(200, OLD_FIX)
        else:
            self._answer(404, {"error": "not_found", "detail": self.path})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/failures":
            self._answer(202, {"pattern": OLD_FIX["pattern"], "fix": OLD_FIX})
        else:
            self._answer(200, {})


@pytest.fixture
def old_node() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OldNode)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_the_old_answer_is_for_this_pattern_and_has_no_flag() -> None:
    assert "non_idempotent" not in OLD_FIX  # what the old node sent
    assert reduce(CHARGE).pattern.hex() == OLD_FIX["pattern"]  # same redaction for it


def test_a_keyed_fix_without_the_flag_is_taken_as_non_idempotent() -> None:
    assert Fix.from_json(OLD_FIX).non_idempotent
    keyless = OLD_FIX | {"recipe": OLD_FIX["recipe"] | {"steps": OLD_FIX["recipe"]["steps"][1:]}}
    assert not Fix.from_json(keyless).non_idempotent
    # a node that says so is believed, either way
    assert not Fix.from_json(OLD_FIX | {"non_idempotent": False}).non_idempotent
    assert Fix.from_json(keyless | {"non_idempotent": True}).non_idempotent


def test_an_unmarked_payments_call_is_not_charged_twice_by_an_old_node(old_node: str) -> None:
    charges: list[str | None] = []

    def charge(customer: str, amount: int, idempotency_key: str | None = None) -> Any:
        charges.append(idempotency_key)
        if len(charges) == 1:  # it went through, but its answer timed out
            raise TimeoutError(f"charge for {customer} timed out after 30000 ms")
        return {"status": "succeeded", "amount": amount}

    client = Client(url=old_node, token="t" * 32, stream=False, timeout=10.0)
    try:

        @client.resilient(service="payments", operation="charge")  # idempotent=True
        def pay(customer: str, amount: int, idempotency_key: str | None = None) -> Any:
            return charge(customer, amount, idempotency_key=idempotency_key)

        with pytest.raises(TimeoutError):
            pay("jane@example.com", 4999)
        assert charges == [None]  # one charge: no retry with a key the first did not carry
        fix = client._cached(bytes.fromhex(OLD_FIX["pattern"]))
        assert fix is not None and fix.non_idempotent  # the fix was found, and refused
    finally:
        client.close()
