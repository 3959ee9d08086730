"""This SDK against a node of the previous release (7a06e9e), over HTTP.

Such a node sends no ``non_idempotent`` with its fixes (it came with this release),
so the SDK took every fix for an idempotent one: a payments call not marked
``idempotent=False`` that failed without a key was retried under the keyed fix, and
a charge that had gone through before its answer timed out was made twice, the
double charge the field was added to prevent. Without the field the SDK now takes a
fix that carries an idempotency key for a non-idempotent one (docs/operations.md
§10).

Its redaction keeps home-directory user names, so for such a failure the SDK
computed another pattern than the node counted, learned and named fixes under: the
SDK never found the node's fix for it. The SDK now notes the pattern the node
answers a report with and looks fixes up under it too.

The node's answers are replayed from ``tests/fixtures/upgrade`` (its README says
how the old code made them).
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

FIXTURES = Path(__file__).parent.parent / "fixtures" / "upgrade"
OLD_FIX = json.loads((FIXTURES / "old_node_fix.json").read_text())
HOME_FIX = json.loads((FIXTURES / "old_fix_home.json").read_text())
HOME_ANSWER = json.loads((FIXTURES / "old_failures_answer.json").read_text())
CHARGE = Failure(
    "payments", "charge", "TimeoutError", "charge for jane@example.com timed out after 30000 ms"
)


class OldNode(BaseHTTPRequestHandler):
    """Answers as the 7a06e9e node did: its recorded fix for the charge pattern.
    A report is answered once ``reports`` is set (a test may hold the answers)."""

    reports = threading.Event()

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
        for fix in (OLD_FIX, HOME_FIX):
            if self.path.startswith(f"/v1/fix?pattern={fix['pattern']}"):
                return self._answer(200, fix)
        self._answer(404, {"error": "not_found", "detail": self.path})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if self.path == "/v1/failures":
            OldNode.reports.wait(5)
        if self.path != "/v1/failures":
            self._answer(200, {})
        elif "/home/" in body.get("message", ""):
            self._answer(202, HOME_ANSWER)
        else:
            self._answer(202, {"pattern": OLD_FIX["pattern"], "fix": OLD_FIX})


@pytest.fixture
def old_node() -> Iterator[str]:
    OldNode.reports.set()
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


HOME = "timed out reading /home/alice/data.csv after 3000 ms"


def test_the_old_node_counts_a_home_path_failure_under_another_pattern() -> None:
    ours = reduce(Failure("files", "read", "TimeoutError", HOME)).pattern.hex()
    assert HOME_ANSWER["pattern"] == HOME_FIX["pattern"] != ours


def test_a_fix_the_old_node_learned_is_found_once_it_answered_a_report(old_node: str) -> None:
    reads: list[str] = []

    def read(path: str) -> str:
        reads.append(path)
        if len(reads) % 2:  # every other attempt times out
            raise TimeoutError(f"timed out reading {path} after 3000 ms")
        return "data"

    client = Client(url=old_node, token="t" * 32, stream=False, timeout=10.0)
    try:

        @client.resilient(service="files", operation="read")
        def r(path: str) -> str:
            return read(path)

        OldNode.reports.clear()  # (the outbox thread could get its answer in time)
        with pytest.raises(TimeoutError):  # the first: the node has not answered yet
            r("/home/alice/data.csv")
        OldNode.reports.set()
        client.flush()  # (or the outbox thread did): the node took it, named its pattern
        assert not client.outbox.pending()
        assert r("/home/alice/data.csv") == "data"  # no failure: no fix needed
        assert r("/home/alice/data.csv") == "data"  # failed, retried under the old fix
        assert reads == ["/home/alice/data.csv"] * 4
        assert client.stats.fixes_applied == 1 and client.stats.recoveries == 1
    finally:
        client.close()


def test_the_streamed_cache_is_searched_under_the_nodes_pattern() -> None:
    client = Client(url="http://127.0.0.1:9", token="t" * 32, stream=False)
    try:
        client._apply_event("fix", HOME_FIX)  # as the event stream delivers it
        ours = reduce(Failure("files", "read", "TimeoutError", HOME)).pattern
        assert client._cached(ours) is None
        body = {"service": "files", "operation": "read", "exc_type": "TimeoutError"}
        client.aliases.learn("/v1/failures", body | {"message": HOME}, HOME_ANSWER, ())
        fix = client._cached(ours)
        assert fix is not None and fix.id.hex() == HOME_FIX["fix"]
        client.aliases.learn("/v1/outcomes", body, {"pattern": "00" * 32}, ())  # not a report
        assert client.aliases.get(b"\0" * 32) == b"\0" * 32
    finally:
        client.close()
