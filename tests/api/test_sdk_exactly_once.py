"""A report is counted once, however often the SDK sends it (a real node, real HTTP).

Before, a report whose answer did not come was never sent again: lost if the node
had not received it (counted in ``stats.reports_unconfirmed``). Sending it again
without an id would have counted it twice when the node had it. Each report now
carries a random id; the SDK sends it again with that id, and the node counts an
id once.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import pytest
from livenode import BOUND, SLOW, LiveNode, until

from gossipmind.api.client import Client
from gossipmind.api.outbox import Outbox, report_id
from gossipmind.api.transport import MaybeSent
from gossipmind.core.errors import NetworkError

LOSE_REQUEST, LOSE_ANSWER = "lose-request", "lose-answer"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    live = LiveNode(tmp_path_factory.mktemp("once-node")).start()
    yield live
    live.stop()


def _read_message(sock: socket.socket, buf: bytearray) -> bytes | None:
    """One HTTP/1.1 message (headers and a Content-Length body) from ``sock``."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf.extend(data)
    head, _, _ = bytes(buf).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    total = len(head) + 4 + length
    while len(buf) < total:
        data = sock.recv(65536)
        if not data:
            return None
        buf.extend(data)
    message = bytes(buf[:total])
    del buf[:total]
    return message


class FlakyProxy:
    """127.0.0.1 proxy to the node that, for its next requests as ``plan`` says,
    loses the request (closes the connection without passing it on) or the answer
    (passes the request on, then closes the connection without the answer)."""

    def __init__(self, port: int, plan: list[str]) -> None:
        self.port_to = port
        self.plan = deque(plan)
        self.posts = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(BOUND)
        upstream = socket.create_connection(("127.0.0.1", self.port_to), timeout=BOUND)
        down, up = bytearray(), bytearray()
        try:
            while not self.stop.is_set():
                request = _read_message(client, down)
                if request is None:
                    return
                with self.lock:
                    self.posts += request.startswith(b"POST ")
                    what = self.plan.popleft() if self.plan else "pass"
                if what == LOSE_REQUEST:
                    return
                upstream.sendall(request)
                answer = _read_message(upstream, up)
                if answer is None or what == LOSE_ANSWER:
                    return
                client.sendall(answer)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(BOUND)


def _failure(service: str) -> dict[str, Any]:
    """A report's body as the SDK sends it for ``_pattern``'s failure (without its id)."""
    return {"service": service, "operation": "q", "exc_type": "TimeoutError", "message": ""}


def _pattern(client: Client, service: str) -> bytes:
    return client.pattern_of(None, service=service, operation="q", exc_type="TimeoutError").pattern


def test_a_report_whose_request_or_answer_was_lost_is_counted_once(node: LiveNode) -> None:
    """The first report's request is lost, the second's answer: both calls time out.
    Before, neither was sent again: the first was never counted. Now both are sent
    again with their ids, and the node counts each once (the second it had)."""
    proxy = FlakyProxy(node.port, [LOSE_REQUEST, LOSE_ANSWER])
    client = Client(url=proxy.url, token=node.token, stream=False, timeout=SLOW)
    pattern = _pattern(client, "lossy")
    try:
        client.outbox._draining.acquire()  # (the outbox thread waits: the plan is the calls')
        try:
            for _ in range(2):
                client.report_failure(None, service="lossy", operation="q", exc_type="TimeoutError")
        finally:
            client.outbox._draining.release()
        assert client.stats.reports_sent == 0 and client.stats.reports_queued == 2
        client._sender.wake(now=True)
        until(lambda: not client.outbox.items, "the outbox thread to send them again")
        assert proxy.posts == 4 and client.stats.reports_resent == 2
        assert client.stats.reports_unconfirmed == 0
    finally:
        client.close()
        proxy.close()
    until(lambda: node.received(pattern) >= 2, "the node to count them")
    assert node.received(pattern) == 2


def test_reports_to_a_hung_node_are_counted_once_when_it_resumes(node: LiveNode) -> None:
    """The node hangs (as under SIGSTOP: the kernel takes the requests, nothing
    answers): 5 reports time out. It resumes and takes them all, and the SDK
    sends them again: 5, not 5 plus the re-sends."""
    client = Client(node.dir, stream=False, timeout=0.3)
    pattern = _pattern(client, "hung")
    release = threading.Event()
    blocker = node.hang(release)
    try:
        for _ in range(5):
            client.report_failure(None, service="hung", operation="q", exc_type="TimeoutError")
        assert client.stats.reports_queued == 5 and client.stats.reports_sent == 0
    finally:
        release.set()
        blocker.join(BOUND)
    try:
        until(lambda: not client.outbox.items, "the outbox thread to send them again")
    finally:
        client.close()
    assert client.stats.reports_resent >= 1 and client.stats.reports_unconfirmed == 0
    until(lambda: node.received(pattern) >= 5, "the node to count them")
    assert node.received(pattern) == 5


def test_flush_cuts_short_a_re_send_that_waits_longer_than_the_timeout(node: LiveNode) -> None:
    """The outbox thread waits longer for the answer to a re-send (up to 10 s); an
    agent's flush() (and close()) does not wait for it: it is cut short, and the
    report is sent again later, counted once."""
    client = Client(node.dir, stream=False, timeout=0.3)
    pattern = _pattern(client, "patient")
    release = threading.Event()
    blocker = node.hang(release)
    try:
        client.outbox._draining.acquire()  # (the outbox thread waits meanwhile)
        try:
            client.report_failure(None, service="patient", operation="q", exc_type="TimeoutError")
            rid = client.outbox.items[0][1]["id"]
            client.outbox._unanswered[rid][1] = 6.0  # its next send waits 10 s
        finally:
            client.outbox._draining.release()
        client._sender.wake(now=True)
        until(
            lambda: (http := client._http) is not None and len(http._patient) > 0,
            "the outbox thread's patient re-send",
        )
        assert client.flush() == 0  # the node is still hung
        cut = [e for e in client.stats.errors if "it may have it" in e and "timed out" not in e]
        assert cut, client.stats.errors  # the re-send was cut short, not timed out
    finally:
        release.set()
        blocker.join(BOUND)
    try:
        until(lambda: not client.outbox.items, "the report to be sent again")
    finally:
        client.close()
    until(lambda: node.received(pattern) >= 1, "the node to count it")
    assert node.received(pattern) == 1


def test_a_duplicate_id_gets_the_same_answer_and_no_second_count(node: LiveNode) -> None:
    http = node.http()
    client = Client(url=node.url, token=node.token, stream=False)
    pattern = _pattern(client, "dup")
    client.close()
    try:

        def duplicates() -> int:
            status, doc = http.request("GET", "/v1/status")
            assert status == 200
            return int(doc["reports"]["duplicates"])

        dups = duplicates()
        body = _failure("dup") | {"id": report_id()}
        answers = [http.request("POST", "/v1/failures", body) for _ in range(3)]
        assert answers[0][0] == 202 and answers[1:] == [answers[0]] * 2
        assert node.received(pattern) == 1
        no_id = _failure("dup")
        assert http.request("POST", "/v1/failures", no_id)[0] == 202  # today's behaviour
        assert http.request("POST", "/v1/failures", no_id)[0] == 202
        assert node.received(pattern) == 3
        before = node.outcomes()
        outcome = {"fix": node.fix.hex(), "attempts": 3, "successes": 2, "id": report_id()}
        assert [http.request("POST", "/v1/outcomes", outcome) for _ in range(2)] == [
            (202, {"queued": True})
        ] * 2
        until(lambda: node.outcomes() != before, "the outcome to be written")
        assert node.outcomes() == (before[0] + 3, before[1] + 2)
        assert duplicates() == dups + 3  # 2 reports and 1 outcome sent again (/v1/status)
    finally:
        http.close()


@pytest.mark.parametrize(
    "bad",
    [123, None, "", "abc", "0" * 31, "0" * 33, "A" * 32, "g" * 32, ["0" * 32], " " + "0" * 31],
)
def test_a_bad_report_id_is_refused_with_a_400_and_changes_nothing(
    node: LiveNode, bad: object
) -> None:
    http = node.http()
    try:
        client = Client(url=node.url, token=node.token, stream=False)
        pattern = _pattern(client, "badid")
        client.close()
        status, doc = http.request("POST", "/v1/failures", _failure("badid") | {"id": bad})
        assert status == 400 and "report id" in doc["error"], doc
        outcome = {"fix": node.fix.hex(), "attempts": 1, "successes": 1, "id": bad}
        status, doc = http.request("POST", "/v1/outcomes", outcome)
        assert status == 400 and "report id" in doc["error"], doc
        assert node.received(pattern) == 0
    finally:
        http.close()


def test_many_threads_reporting_at_once_are_each_counted_once(node: LiveNode) -> None:
    """8 threads report through one client while 8 more send each report's body
    again with its id at the same time: 160 reports, counted 160 times."""
    client = Client(node.dir, stream=False, timeout=SLOW)
    pattern = _pattern(client, "crowd")
    bodies: list[dict[str, Any]] = []
    lock = threading.Lock()
    real = client._send

    def spy(path: str, body: dict[str, Any]) -> None:
        with lock:
            bodies.append(body)
        real(path, body)

    client._send = spy  # type: ignore[method-assign]
    start = threading.Barrier(8)

    def report() -> None:
        start.wait(BOUND)
        for _ in range(20):
            client.report_failure(None, service="crowd", operation="q", exc_type="TimeoutError")

    threads = [threading.Thread(target=report) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    try:
        until(lambda: not client.outbox.items, "the queue to be sent")
    finally:
        client.close()
    assert len(bodies) == 160 and len({b["id"] for b in bodies}) == 160

    def again(part: list[dict[str, Any]]) -> None:
        http = node.http()
        try:
            for body in part:
                assert http.request("POST", "/v1/failures", body)[0] == 202
        finally:
            http.close()

    threads = [threading.Thread(target=again, args=(bodies[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    until(lambda: node.received(pattern) >= 160, "the node to count them")
    assert node.received(pattern) == 160


# --------------------------------------------------------------- the outbox's bounds


def _fails(error: Exception) -> Any:
    sent: list[dict[str, Any]] = []

    def send(path: str, body: dict[str, Any]) -> None:
        sent.append(body)
        raise error

    return send, sent


def test_an_unanswered_report_is_sent_again_within_its_bounds_then_given_up() -> None:
    outbox = Outbox(10)
    outbox.max_sends = 3
    outbox.put("/v1/failures", {"id": report_id(), "n": 0}, unanswered=True)  # sent once
    send, sent = _fails(MaybeSent("no answer"))
    assert outbox.drain(send) == 0 and len(sent) == 1 and outbox.items  # 2 sends
    assert outbox.drain(send) == 0 and len(sent) == 2 and not outbox.items  # 3: given up
    assert outbox.stats.reports_resent == 2 and outbox.stats.reports_unconfirmed == 1


def test_an_unanswered_report_is_given_up_past_its_age() -> None:
    outbox = Outbox(10)
    outbox.put("/v1/failures", {"id": report_id()}, unanswered=True)
    unreachable, sent = _fails(NetworkError("node API unreachable: refused"))
    assert outbox.drain(unreachable) == 0 and outbox.items  # the node is down: it waits
    outbox.max_resend_s = 0.0  # (as if its first send were long ago)
    assert outbox.drain(unreachable) == 0 and not outbox.items
    assert len(sent) == 2 and outbox.stats.reports_unconfirmed == 1


def test_a_report_never_sent_waits_for_the_node_however_long() -> None:
    outbox = Outbox(10)
    outbox.max_resend_s = 0.0
    outbox.put("/v1/failures", {"id": report_id()})
    unreachable, sent = _fails(NetworkError("node API unreachable: refused"))
    for _ in range(3):
        assert outbox.drain(unreachable) == 0
    assert len(sent) == 3 and len(outbox.items) == 1 and outbox.stats.reports_unconfirmed == 0


def test_a_report_without_an_id_is_never_sent_again() -> None:
    """(put by hand, say: sent again, it could be counted twice)"""
    outbox = Outbox(10)
    outbox.put("/v1/failures", {"n": 1})
    send, sent = _fails(MaybeSent("no answer"))
    assert outbox.drain(send) == 0 and not outbox.items and len(sent) == 1
    assert outbox.stats.reports_unconfirmed == 1


def test_an_outcome_sent_without_an_answer_is_not_added_to() -> None:
    """The node may have counted it as it was sent: what comes after goes in a new one."""
    outbox = Outbox(10)
    fix = "ab" * 32
    outbox.put_outcome(fix, 2, 1)
    outbox.put_outcome(fix, 1, 1)
    assert [(b["attempts"], b["successes"]) for _, b in outbox.items] == [(3, 2)]
    send, _ = _fails(MaybeSent("no answer"))
    outbox.drain(send)
    outbox.put_outcome(fix, 5, 5)
    bodies = [b for _, b in outbox.items]
    assert [(b["attempts"], b["successes"]) for b in bodies] == [(3, 2), (5, 5)]
    assert bodies[0]["id"] != bodies[1]["id"]
