"""Async agents: the SDK's node calls run in threads of its own, and the queue of
reports is sent by one thread at a time.

A report must reach the node once (a duplicate inflates the fleet's counts), the
agent's executor is the agent's (the SDK never waits for it, never fails with
it), and a hand-off that fails is "no fix", never an error of the SDK's.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
import trio
import trio.testing

from gossipmind.api import offload
from gossipmind.api.client import Client
from gossipmind.api.outbox import Outbox
from gossipmind.api.transport import Http
from gossipmind.core.errors import NetworkError

DOWN = {"url": "http://127.0.0.1:9", "token": "x" * 20, "stream": False}
BOUND = 10  # s: a test that would hang without the fix fails instead


class AgentError(Exception):
    """The agent's own error."""


# ------------------------------------------------------------- one drainer at a time


def test_two_threads_draining_the_outbox_send_each_report_once_in_order() -> None:
    outbox = Outbox(100)
    for i in range(5):
        outbox.put("/v1/failures", {"n": i})
    inside, release = threading.Event(), threading.Event()
    sent: list[tuple[str, int]] = []

    def send(path: str, body: dict[str, Any]) -> None:
        sent.append((threading.current_thread().name, body["n"]))
        if len(sent) == 1:  # the first drainer holds the first report in flight...
            inside.set()
            assert release.wait(BOUND)

    first = threading.Thread(target=outbox.drain, args=(send,), name="first")
    first.start()
    try:
        assert inside.wait(BOUND)
        assert outbox.drain(send) == 0  # ...so a second drainer leaves the queue to it
    finally:
        release.set()
        first.join(BOUND)
    assert sent == [("first", n) for n in range(5)]
    assert not outbox.items


def test_a_failed_send_keeps_the_report_and_a_waiting_flush_sends_the_rest() -> None:
    outbox = Outbox(100)
    for i in range(3):
        outbox.put("/v1/outcomes", {"n": i})
    sent: list[int] = []

    def send(path: str, body: dict[str, Any]) -> None:
        if body["n"] == 1 and 1 not in failed:
            failed.append(1)
            raise NetworkError("node went away")
        sent.append(body["n"])

    failed: list[int] = []
    assert outbox.drain(send) == 1 and [b["n"] for _, b in outbox.items] == [1, 2]
    assert outbox.drain(send, wait=True) == 2 and not outbox.items
    assert sent == [0, 1, 2]


class Node(BaseHTTPRequestHandler):
    """A node that refuses writes (503) until ``up``, then takes each in 20 ms."""

    up = threading.Event()
    received: ClassVar[list[tuple[str, str]]] = []
    lock = threading.Lock()

    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = 503
        if self.up.is_set():
            threading.Event().wait(0.02)
            with self.lock:
                self.received.append((self.path, body.get("service", "")))
            status = 202
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def node() -> Iterator[tuple[type[Node], str]]:
    handler = type("FreshNode", (Node,), {"up": threading.Event(), "received": []})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()
    thread.join(BOUND)


def test_reports_queued_while_the_node_failed_reach_it_once_from_concurrent_calls(
    node: tuple[type[Node], str],
) -> None:
    """The review's repro: 10 reports queued, then 16 concurrent failing async calls."""
    handler, url = node
    client = Client(url=url, token="t" * 20, stream=False, timeout=5)

    def agent(service: str) -> Any:
        @client.resilient(service=service, operation="query", on_failure="degrade")
        async def call() -> None:
            raise AgentError("boom")

        return call

    async def main() -> None:
        for i in range(10):  # the node refuses: these are queued
            await agent(f"queued{i}")()
        assert len(client.outbox.items) == 10
        handler.up.set()
        await asyncio.gather(*(agent(f"live{i}")() for i in range(16)))

    try:
        asyncio.run(main())
        client.flush()
    finally:
        client.close()
    services = [s for _, s in handler.received]
    twice = sorted({s for s in services if services.count(s) > 1})
    assert twice == [], f"sent more than once: {twice}"
    assert sorted(services) == sorted(
        [f"queued{i}" for i in range(10)] + [f"live{i}" for i in range(16)]
    )
    queued = [s for s in services if s.startswith("queued")]
    assert queued == [f"queued{i}" for i in range(10)]  # in the order they were queued
    assert not client.outbox.items


# ------------------------------------------------------- the agent's executor is its own


@pytest.fixture
def io_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread of every HTTP request the SDK makes to its node."""
    seen: list[str] = []
    real = Http.request

    def request(self: Http, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        seen.append(threading.current_thread().name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Http, "request", request)
    return seen


def agent_calls(client: Client) -> tuple[Any, Any]:
    @client.resilient(service="search", operation="query")
    async def raises() -> str:
        raise AgentError("the agent's own error")

    @client.resilient(service="search", operation="query", on_failure="degrade", default="cached")
    async def degrades() -> str:
        raise AgentError("the agent's own error")

    return raises, degrades


def test_a_shut_down_default_executor_never_replaces_the_agents_error(
    io_threads: list[str],
) -> None:
    client = Client(**DOWN)  # type: ignore[arg-type]
    raises, degrades = agent_calls(client)

    async def main() -> None:
        executor = ThreadPoolExecutor(1)
        asyncio.get_running_loop().set_default_executor(executor)
        executor.shutdown()  # the agent's teardown, say
        with pytest.raises(AgentError):
            await raises()
        assert await degrades() == "cached"
        async with client.resilient(service="search", operation="query", on_failure="degrade"):
            raise AgentError("in a block")

    try:
        asyncio.run(main())
        during = list(io_threads)  # (close() then flushes from this thread)
    finally:
        client.close()
    assert client.stats.reports_queued == 3  # the reports still went the SDK's way
    assert during and all(name.startswith("gossipmind-sdk") for name in during)


def test_a_busy_default_executor_never_holds_up_the_agents_failed_call(
    io_threads: list[str],
) -> None:
    client = Client(**DOWN)  # type: ignore[arg-type]
    raises, _ = agent_calls(client)
    busy = threading.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(1, thread_name_prefix="agent")
        loop.set_default_executor(executor)
        work = loop.run_in_executor(None, busy.wait, BOUND)  # the agent's own blocking work
        try:
            with pytest.raises(AgentError):
                await asyncio.wait_for(raises(), BOUND)
            assert not work.done()  # the agent's worker was busy throughout
        finally:
            busy.set()
            await work

    try:
        asyncio.run(main())
        during = list(io_threads)
    finally:
        client.close()
    assert during and all(name.startswith("gossipmind-sdk") for name in during)


def test_trio_uses_a_thread_limiter_of_its_own(io_threads: list[str]) -> None:
    client = Client(**DOWN)  # type: ignore[arg-type]
    raises, degrades = agent_calls(client)
    busy = threading.Event()

    async def main() -> None:
        trio.to_thread.current_default_thread_limiter().total_tokens = 1
        async with trio.open_nursery() as nursery:  # the agent's own blocking work
            nursery.start_soon(trio.to_thread.run_sync, busy.wait, BOUND)
            await trio.testing.wait_all_tasks_blocked()
            try:
                with trio.fail_after(BOUND):
                    with pytest.raises(AgentError):
                        await raises()
                    assert await degrades() == "cached"
                assert not busy.is_set()
            finally:
                busy.set()

    try:
        trio.run(main)
    finally:
        client.close()
    assert client.stats.reports_queued == 2 and len(io_threads) >= 2


@pytest.mark.parametrize("library", ["asyncio", "trio"])
def test_a_hand_off_that_fails_is_no_fix_not_an_sdk_error(
    monkeypatch: pytest.MonkeyPatch, library: str
) -> None:
    def no_thread(*_: Any, **__: Any) -> Any:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(offload.Workers, "submit", no_thread)
    monkeypatch.setattr(trio.to_thread, "run_sync", no_thread)
    client = Client(**DOWN)  # type: ignore[arg-type]
    raises, degrades = agent_calls(client)

    async def main() -> None:
        with pytest.raises(AgentError):
            await raises()
        assert await degrades() == "cached"

    try:
        if library == "asyncio":
            asyncio.run(main())
        else:
            trio.run(main)
    finally:
        client.close()
    assert client.stats.reports_queued == 0  # nothing ran: the agent's result stands


def test_the_sdks_threads_are_a_bounded_few_daemons_started_as_needed() -> None:
    workers = offload.Workers(3, name="test-sdk")
    gate = threading.Event()
    try:
        assert workers.submit(lambda: 1).result(BOUND) == 1
        assert workers.submit(lambda: 2).result(BOUND) == 2
        assert len(workers.threads()) == 1  # the idle worker took the second job
        held = [workers.submit(lambda i=i: gate.wait(BOUND) and i) for i in range(5)]
        assert len(workers.threads()) == 3  # no more than size, however many wait
        gate.set()
        assert [f.result(BOUND) for f in held] == list(range(5))
        threads = workers.threads()
        assert all(t.daemon and t.name.startswith("test-sdk-") for t in threads)
    finally:
        gate.set()
        workers.close(BOUND)
    assert not any(t.is_alive() for t in threads)


def test_a_process_forked_mid_drain_neither_hangs_nor_sends_the_parents_reports(
    node: tuple[type[Node], str],
) -> None:
    """A fork while an SDK thread drains (multiprocessing's default start method,
    gunicorn preload...): the child inherited the held drain lock, so its flush()
    and close() hung forever. Now the child starts with fresh locks and an empty
    queue (the queued reports are the parent's to send: once)."""
    import os
    import signal

    handler, url = node
    handler.up.set()
    client = Client(url=url, token="t" * 20, stream=False, timeout=5)
    for i in range(5):
        client.outbox.put("/v1/failures", {"service": f"s{i}"})
    flusher = threading.Thread(target=client.flush, daemon=True)
    flusher.start()
    deadline = threading.Event()
    while not client.outbox._draining.locked() and not deadline.wait(0.001):
        pass  # until the SDK thread holds the drain lock (the moment of the fork)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what flush() did, then leave at once
        try:
            signal.alarm(10)
            sent = client.flush()
            os.write(write, json.dumps([sent, len(client.outbox.items)]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        child = f.read()
    _, status = os.waitpid(pid, 0)
    flusher.join(BOUND)
    assert os.WIFEXITED(status), "the child's flush() hung (killed by its alarm)"
    assert json.loads(child) == [0, 0]
    assert sorted(s for _, s in handler.received) == [f"s{i}" for i in range(5)]
