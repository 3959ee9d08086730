"""The SDK at its process's edges, against a real node (its HTTP API on 127.0.0.1).

A review found (1) that reports the decorator and ``report_outcome`` queued
were lost when the agent's process ended without ``close()``: the outbox
thread is a daemon thread, killed at exit (4 of 8 reached the node, none of the
outcomes); and (2) that a forked child served the parent's fix cache as it was
at the fork, forever: no event thread followed the node there, yet the cache
said it was live (a fix revoked later was still applied, one accepted later
never found).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from livenode import BOUND, SLOW, LiveNode, until
from test_sdk_outbox import SlowProxy

from gossipmind.api.client import Client
from gossipmind.api.outbox import Outbox
from gossipmind.core.encoding import encode
from gossipmind.core.schema import fix_id


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    live = LiveNode(tmp_path_factory.mktemp("exit-fork-node")).start()
    yield live
    live.stop()


# ------------------------------------------- finding 1: the queue is sent at exit


AGENT = """
import sys
from gossipmind import Client

client = Client(
    url=sys.argv[1], token=sys.argv[2], timeout=float(sys.argv[3]), stream=sys.argv[5] == "stream"
)

@client.resilient(service="exitflush", operation="charge", on_failure="degrade")
def charge(i):
    raise TimeoutError("upstream timed out after 3000 ms")

for i in range(5):
    charge(i)
for _ in range(3):
    client.report_outcome(bytes.fromhex(sys.argv[4]), True)
print(len(client.outbox.items), flush=True)
"""  # ends without close(): the interpreter exits with the queue in hand


def run_agent(
    url: str, token: str, timeout: float, fix: bytes, *, stream: bool = True
) -> subprocess.CompletedProcess[str]:
    """The agent above, run to its end; ``stream=False``: it asks the node for fixes."""
    args = [sys.executable, "-c", AGENT, url, token, str(timeout), fix.hex()]
    args.append("stream" if stream else "no-stream")
    return subprocess.run(args, capture_output=True, text=True, timeout=BOUND, check=False)


def test_an_agent_that_exits_without_close_still_sends_its_queue_once(node: LiveNode) -> None:
    """Answers 0.1 s late: before, the outbox thread sent the first report and was
    killed with the interpreter; the other failures and every outcome were lost."""
    proxy = SlowProxy(node.port, delay=0.1)
    with Client(url="http://127.0.0.1:9", token="t" * 20, stream=False) as local:
        exc = TimeoutError("upstream timed out after 3000 ms")
        pattern = local.pattern_of(exc, service="exitflush", operation="charge").pattern
    attempts, successes = node.outcomes()
    try:
        out = run_agent(f"http://127.0.0.1:{proxy.port}", node.token, SLOW, node.fix, stream=False)
    finally:
        proxy.close()
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 0  # the agent left with reports still queued
    until(lambda: node.received(pattern) >= 5, "the 5 failures")
    until(lambda: node.outcomes() == (attempts + 3, successes + 3), "the 3 outcomes")
    assert node.received(pattern) == 5  # each once
    assert proxy.requests(b"POST /v1/failures ") == 5
    assert "lost at exit" not in out.stderr


def test_an_agent_exits_at_once_when_the_node_is_down_and_says_what_was_lost() -> None:
    out = run_agent("http://127.0.0.1:9", "t" * 20, 0.5, b"\x01" * 32)
    assert out.returncode == 0, out.stderr
    lost = int(out.stdout)
    assert lost >= 5
    assert f"gossipmind: {lost} queued report(s) lost at exit" in out.stderr


def test_an_agent_never_waits_at_exit_for_a_hung_node_past_the_limit() -> None:
    """A node that accepts connections and never answers, the SDK's timeout 10 s:
    the exit waits for the outbox thread's request at most the exit limit (the
    subprocess's own bound catches a hang)."""
    import socket

    hung = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nothing answers
    try:
        out = run_agent(f"http://127.0.0.1:{hung.getsockname()[1]}", "t" * 20, SLOW, b"\x01" * 32)
    finally:
        hung.close()
    assert out.returncode == 0, out.stderr
    assert "queued report(s) lost at exit" in out.stderr


def test_a_drain_with_a_deadline_waits_for_another_drainer_only_until_then() -> None:
    outbox = Outbox(10)
    for i in range(3):
        outbox.put("/v1/failures", {"n": i})
    inside, release = threading.Event(), threading.Event()
    sent: list[int] = []

    def send(path: str, body: dict[str, Any]) -> None:
        if not inside.is_set():  # the first drainer holds the first report in flight
            inside.set()
            assert release.wait(BOUND)
        sent.append(body["n"])

    first = threading.Thread(target=outbox.drain, args=(send,))
    first.start()
    try:
        assert inside.wait(BOUND)
        assert outbox.drain(send, wait=True, deadline=time.monotonic() + 0.2) == 0
    finally:
        release.set()
        first.join(BOUND)
    assert sent == [0, 1, 2] and not outbox.items  # each once, by the first drainer
    outbox.put("/v1/failures", {"n": 3})
    assert outbox.drain(send, wait=True, deadline=time.monotonic() - 1) == 0  # past: none
    assert [b["n"] for _, b in outbox.items] == [3]


class Kept(logging.Handler):
    """Keeps the messages of the SDK's logger (a node's logging setup may stop
    ``gossipmind`` records from reaching the root logger, where caplog is)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_client_dropped_unclosed_says_what_it_lost() -> None:
    """Only a stream=False client can be garbage-collected (the event thread holds
    the others): its thread ends with it; the reports it queued are lost, logged."""
    client = Client(url="http://127.0.0.1:9", token="t" * 20, stream=False)
    for _ in range(3):
        client.report_outcome(b"\x01" * 32, True)
        client.report_outcome(b"\x02" * 32, False)
    sender = client._sender
    gc.collect()  # (an earlier test's client, collected now, would say what it lost here)
    kept = Kept()
    logger = logging.getLogger("gossipmind.sdk")
    logger.addHandler(kept)
    try:
        del client
        for _ in range(200):  # (the outbox thread holds it while it tries to send: 10 s at most)
            gc.collect()
            if kept.messages:
                break
            time.sleep(0.05)
    finally:
        logger.removeHandler(kept)
    pattern = r"gossipmind: (\d+) queued report\(s\) lost: a Client was dropped without close"
    lost = [re.match(pattern, m) for m in kept.messages]
    assert [int(m[1]) >= 2 for m in lost if m] == [True]  # (more if one was in flight)
    assert sender._closed


def test_a_closed_client_says_what_it_lost_at_close_and_not_as_dropped() -> None:
    """A closed client whose queue the node did not take was said, when collected,
    to have been "dropped without close()"; close() itself said nothing."""
    client = Client(url="http://127.0.0.1:9", token="t" * 20, stream=False)
    client.report_outcome(b"\x01" * 32, True)
    gc.collect()
    kept = Kept()
    logger = logging.getLogger("gossipmind.sdk")
    logger.addHandler(kept)
    try:
        client.close()
        del client
        gc.collect()
    finally:
        logger.removeHandler(kept)
    assert kept.messages == [
        "gossipmind: 1 queued report(s) lost at close(): the node did not take them "
        "(down, or it did not answer)"
    ]


# ------------------------------------------ finding 2: a forked child's fix cache


def accept_another_fix(node: LiveNode) -> bytes:
    """A second fix for the node's pattern (its fix's recipe with another budget),
    proposed and accepted through the node's API; its id."""
    http = node.http()
    try:
        status, rows = http.request("GET", f"/v1/fixes?pattern={node.pattern.hex()}")
        assert status == 200, rows
        recipe = next(r for r in rows if r["fix"] == node.fix.hex())["recipe"]
        recipe = dict(recipe, budget_ms=int(recipe["budget_ms"]) - 1)
        fid = fix_id(node.pattern, recipe)
        ops: list[tuple[str, dict[str, Any]]] = [
            (
                "fix.propose",
                {
                    "pattern": node.pattern,
                    "recipe": recipe,
                    "risk": "low",
                    "rationale": "",
                    "origin": "synth",
                },
            ),
            (
                "fix.attest",
                {"fix": fid, "scope": recipe["scope"], "verdict": "accept", "reasons": []},
            ),
        ]
        for kind, body in ops:
            status, doc = http.request(
                "POST", "/v1/ops", {"kind": kind, "body": encode(body).hex()}
            )
            assert status == 201, doc
    finally:
        http.close()
    return fid


def test_a_forked_child_follows_the_node_again_not_the_cache_of_the_fork(
    node: LiveNode,
) -> None:
    """Before, the child had the parent's cache and a 'ready' stream with no thread:
    a fix accepted after the fork was never found there."""
    client = Client(node.dir, timeout=SLOW)
    try:
        assert client.wait_ready(BOUND)
        assert set(client._cache.get(node.pattern, {})) == {node.fix}
        report_r, report_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: tell what its client does, then leave at once
            try:
                signal.alarm(int(BOUND))
                seen: dict[str, Any] = {
                    "ready_at_fork": client._ready.is_set(),
                    "cached_at_fork": len(client._cache),
                }
                os.read(go_r, 1)  # the node has accepted a second fix
                seen["ready"] = client.wait_ready(BOUND)
                deadline = time.monotonic() + 10
                for _ in range(1000):  # until the second fix is cached (10 s at most)
                    if len(client._cache.get(node.pattern, {})) > 1 or time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
                seen["fixes"] = sorted(f.hex() for f in client._cache.get(node.pattern, {}))
                fix = client.fix_for(node.pattern)
                seen["fix_for"] = fix.id.hex() if fix is not None else None
                seen["threads"] = [t.name for t in threading.enumerate() if t.is_alive()]
                os.write(report_w, json.dumps(seen).encode())
            finally:
                os._exit(0)
        os.close(report_w)
        os.close(go_r)
        try:
            second = accept_another_fix(node)
            until(lambda: second in client._cache.get(node.pattern, {}), "the parent's cache")
        finally:
            os.write(go_w, b"x")  # (the child goes on, whatever happened here)
            os.close(go_w)
        with os.fdopen(report_r) as f:
            child = json.loads(f.read() or "{}")
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status), "the child hung (killed by its alarm)"
    finally:
        client.close()
    assert child["ready"] is True
    assert child["fixes"] == sorted([node.fix.hex(), second.hex()])
    assert child["ready_at_fork"] is False and child["cached_at_fork"] == 0
    assert child["fix_for"] in (node.fix.hex(), second.hex())
    assert "gossipmind-events" in child["threads"]


def test_a_forked_child_of_a_client_without_a_stream_keeps_asking_the_node(
    node: LiveNode,
) -> None:
    client = Client(node.dir, stream=False, timeout=SLOW)
    try:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                signal.alarm(int(BOUND))
                fix = client.fix_for(node.pattern)
                names = [t.name for t in threading.enumerate()]
                os.write(write, json.dumps([fix is not None, names]).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            found, names = json.loads(f.read() or "[false, []]")
        os.waitpid(pid, 0)
    finally:
        client.close()
    assert found and "gossipmind-events" not in names
