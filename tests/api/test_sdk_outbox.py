"""The SDK's queue of reports, against a real node (its HTTP API on 127.0.0.1).

A review found a report sent 3 to 5 times to a node slower than the SDK's
timeout, and a success path that made a blocking request per call. Reports and
outcomes now go through the outbox thread, each at most once; the call waits
for no node.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from livenode import BOUND, SLOW, LiveNode, keyed_pay, record_requests, until

from gossipmind.api.client import Client
from gossipmind.api.server import drop_connections


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    live = LiveNode(tmp_path_factory.mktemp("review-node")).start()
    yield live
    live.stop()


@pytest.fixture
def request_threads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    return record_requests(monkeypatch)


# ------------------------------------------------ finding 3: a node slower than the SDK


class SlowProxy:
    """127.0.0.1 proxy to the node: requests go through at once, answers ``delay`` s
    late. It keeps every byte sent to the node, to count the requests."""

    def __init__(self, port: int, delay: float) -> None:
        self.port_to, self.delay = port, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.sent: list[bytearray] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port_to))
            record = bytearray()
            self.sent.append(record)
            for args in ((client, upstream, 0.0, record), (upstream, client, self.delay, None)):
                thread = threading.Thread(target=self._pipe, args=args, daemon=True)
                thread.start()
                self.threads.append(thread)

    def _pipe(self, src: socket.socket, dst: socket.socket, delay: float, record: Any) -> None:
        src.settimeout(0.1)
        try:
            while not self.stop.is_set():
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                if record is not None:
                    record.extend(data)
                if delay:
                    self.stop.wait(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):  # the other direction's thread wakes up and ends
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def requests(self, line: bytes) -> int:
        return sum(bytes(r).count(line) for r in self.sent)

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(BOUND)


def test_a_node_slower_than_the_sdk_counts_each_report_once(node: LiveNode) -> None:
    """Answers late, the SDK's timeout 0.3 s: a report was sent again after the read
    timeout, queued, and sent from the queue again: 5 failures were counted 23 times.
    Now a report whose answer did not come is sent again with its id (the outbox
    thread waiting twice as long each time, so the answer comes at last): the node
    counts each once."""
    proxy = SlowProxy(node.port, delay=0.5)
    url = f"http://127.0.0.1:{proxy.port}"
    client = Client(url=url, token=node.token, stream=False, timeout=0.3)
    exc = TimeoutError("search timed out after 3000 ms (slow node)")
    pattern = client.pattern_of(exc, service="slow", operation="query").pattern

    @client.resilient(service="slow", operation="query")
    def query() -> None:
        raise exc

    try:
        for _ in range(5):
            client.report_failure(exc, service="slow", operation="query")
        assert proxy.requests(b"POST /v1/failures ") >= 5  # each once at the call, then queued
        for _ in range(3):
            with pytest.raises(TimeoutError):
                query()
        until(lambda: not client.outbox.items, "the outbox thread to send the queue")
    finally:
        client.close()
        proxy.close()
    resent = client.stats.reports_resent
    assert resent >= 8 and proxy.requests(b"POST /v1/failures ") == 8 + resent
    assert proxy.requests(b"GET /v1/fix?") == 3  # a lookup is not asked again after a timeout
    assert client.stats.reports_sent == 0 and client.stats.reports_unconfirmed == 0
    until(lambda: node.received(pattern) >= 8, "the node to take them")
    assert node.received(pattern) == 8  # each once, however often it was sent


def test_a_keep_alive_connection_the_node_closed_loses_no_report(node: LiveNode) -> None:
    """A report written on a connection the node had closed is sent on a new one."""
    client = Client(node.dir, stream=False, timeout=SLOW)
    pattern = client.pattern_of(TimeoutError("t"), service="stale", operation="q").pattern
    try:
        for _ in range(3):
            client.report_failure(TimeoutError("t"), service="stale", operation="q")
            assert drop_connections(node.port) >= 1  # the node shuts the idle connection
    finally:
        client.close()
    assert client.stats.reports_sent == 3 and node.received(pattern) == 3
    assert client.stats.reports_unconfirmed == 0


def test_the_queue_reaches_a_node_that_restarted(tmp_path: Path) -> None:
    """Reports and outcomes made while the node is stopped wait in the queue; the
    outbox thread sends them, once, to the node started again on its data dir."""
    first = LiveNode(tmp_path).start()
    client = Client(first.dir, timeout=SLOW)
    exc = TimeoutError("t")
    pattern = client.pattern_of(exc, service="restart", operation="q").pattern
    second = None
    try:
        assert client.wait_ready(BOUND)
        client.report_failure(exc, service="restart", operation="q")
        fix = client.preventive_fix("payments", "charge")
        assert fix is not None and client.stats.reports_sent == 1
        first.stop()
        for _ in range(3):
            client.report_failure(exc, service="restart", operation="q")
        for _ in range(4):
            client.report_outcome(fix, True)
        assert len(client.outbox.items) == 4 and client.stats.reports_queued == 7
        second = LiveNode.again(first)
        until(lambda: not client.outbox.items, "the queue to reach the restarted node")
        until(lambda: second.received(pattern) == 4, "the node to count the failures")
        until(lambda: second.outcomes()[0] == 4, "the node to count the outcomes")
        assert second.outcomes() == (4, 4) and second.received(pattern) == 4
    finally:
        client.close()
        first.stop()
        if second is not None:
            second.stop()


# ------------------------------------- finding 4: the success path waits for no node


def test_a_call_under_a_learned_fix_sends_nothing_from_the_agents_thread(
    node: LiveNode, request_threads: list[tuple[str, str]]
) -> None:
    """Each successful call of a non-idempotent function under a cached keyed fix made a
    blocking POST /v1/outcomes (3.5 ms healthy, 1 to 2 s with a hung node)."""
    client = Client(node.dir, timeout=SLOW)
    assert client.wait_ready(BOUND) and client.preventive_fix("payments", "charge") is not None
    before = node.outcomes()
    pay = keyed_pay(client)
    request_threads.clear()  # (the test's own request above)
    try:
        receipts = [pay("jane", 100 + i) for i in range(20)]
        until(lambda: not client.outbox.items, "the outbox thread to send the outcomes")
        during = list(request_threads)
    finally:
        client.close()
    assert all(r["status"] == "succeeded" and r["key"] for r in receipts)
    assert during and {name for name, _ in during} == {"gossipmind-sdk-outbox"}
    assert {path for _, path in during} == {"/v1/outcomes"}
    assert client.stats.reports_unconfirmed == 0 and client.stats.reports_refused == 0
    until(lambda: node.outcomes()[0] == before[0] + 20, "the node to count the outcomes")
    assert node.outcomes() == (before[0] + 20, before[1] + 20)


def test_a_hung_node_holds_up_no_call(
    node: LiveNode, request_threads: list[tuple[str, str]]
) -> None:
    """With the node's event loop blocked: successes under the fix and failures
    (sync and asyncio) return at once, and the queue reaches the node once it is back.
    (The SDK's timeout is longer than the hang: what it sent meanwhile is answered.)"""
    client = Client(node.dir, timeout=SLOW)
    assert client.wait_ready(BOUND)
    pay = keyed_pay(client)
    failing = client.resilient(service="hung", operation="q", on_failure="degrade", default=0)
    pattern = client.pattern_of(KeyError("k"), service="hung", operation="q").pattern
    before = (node.received(pattern), node.outcomes())

    @failing
    def fails() -> int:
        raise KeyError("k")

    @failing
    async def afails() -> int:
        raise KeyError("k")

    async def async_calls() -> list[int]:
        return list(await asyncio.gather(*(afails() for _ in range(16))))

    request_threads.clear()
    release = threading.Event()
    hold = node.hang(release)
    try:
        receipts = [pay("jane", i) for i in range(5)]
        values = [fails() for _ in range(5)]
        values += asyncio.run(async_calls())
        agent_threads = {n for n, _ in request_threads if n != "gossipmind-sdk-outbox"}
    finally:
        release.set()
        hold.join(BOUND)
    try:
        assert [r["status"] for r in receipts] == ["succeeded"] * 5 and values == [0] * 21
        assert agent_threads == set()  # nothing but the outbox thread talked to the node
        until(lambda: not client.outbox.items, "the queue to be sent")
    finally:
        client.close()
    assert client.stats.reports_unconfirmed == 0 and client.outbox.dropped == 0
    until(lambda: node.received(pattern) == before[0] + 21, "the node to take the failures")
    until(lambda: node.outcomes()[0] == before[1][0] + 5, "the node to count the outcomes")


def test_outcomes_waiting_in_the_queue_go_as_one_request(node: LiveNode) -> None:
    client = Client(node.dir, stream=False, timeout=SLOW)
    pay = keyed_pay(client)
    before = node.outcomes()
    client.outbox._draining.acquire()  # (as if a send were slow) nothing leaves the queue
    try:
        fix = client.fix_for(node.pattern)
        assert fix is not None
        client._cache[fix.pattern] = {fix.id: fix}  # the cache a stream would keep
        for i in range(20):
            pay("jane", i)
        items = [body.copy() for _, body in client.outbox.items]
    finally:
        client.outbox._draining.release()
    try:
        assert len(items) == 1 and len(items[0].pop("id")) == 32  # (the report's id)
        assert items == [{"fix": node.fix.hex(), "attempts": 20, "successes": 20}]
        client.flush()
        until(lambda: not client.outbox.items, "the queue to be sent")
    finally:
        client.close()
    until(lambda: node.outcomes()[0] == before[0] + 20, "the node to count the outcomes")
    assert node.outcomes() == (before[0] + 20, before[1] + 20)


def test_a_client_dropped_unclosed_leaves_no_outbox_thread() -> None:
    """The outbox thread holds the client weakly: one never closed is collected and
    its thread ends (reports it still held are lost with it, as before)."""
    client = Client(url="http://127.0.0.1:9", token="t" * 20, stream=False)
    client.report_failure(TimeoutError("t"), service="dropped", operation="q")
    assert len(client.outbox.items) == 1
    thread = client._sender._thread
    assert thread is not None and thread.is_alive()
    del client
    for _ in range(int(BOUND / 0.1)):  # (a send in progress holds it until it ends)
        gc.collect()
        thread.join(0.1)
        if not thread.is_alive():
            break
    assert not thread.is_alive()
