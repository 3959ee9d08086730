"""The SDK against a real node (its HTTP API on 127.0.0.1), as a code review found it wanting.

Each test names what went wrong before: a context that poisoned the queue,
reports the node refused while the SDK counted them sent, a bad URL that killed
the event thread, a context manager that kept an earlier block's error.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from livenode import BOUND, SLOW, LiveNode, point_at, until

from gossipmind.api.client import Client
from gossipmind.api.process import pid_alive
from gossipmind.core.errors import ConfigError


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    live = LiveNode(tmp_path_factory.mktemp("review-node")).start()
    yield live
    live.stop()


# ------------------------------------------- finding 1: a context JSON cannot carry


class Opaque:
    """An object of the agent's: JSON has no type for it."""


ODD_CONTEXTS: list[Any] = [
    {"body": b"\x00\xff"},
    {"at": datetime.datetime(2024, 1, 1)},
    {"ids": {1, 2}},
    {"obj": Opaque(), ("tuple", "key"): 1},
]


def test_a_context_json_cannot_carry_never_poisons_the_queue(
    node: LiveNode, tmp_path: Path
) -> None:
    """It raised TypeError into the agent (node up); queued (node down), it killed the
    event thread once the node came up, and every later report raised TypeError."""
    client = Client(tmp_path, timeout=SLOW)  # the node has "not started" for this agent yet
    try:
        for context in ODD_CONTEXTS:
            client.report_failure(
                ValueError("bad"), service="odd", operation="context", context=context
            )
        assert len(client.outbox.items) == len(ODD_CONTEXTS)
        pattern = client.pattern_of(ValueError("bad"), service="odd", operation="context").pattern
        point_at(tmp_path, node)
        assert client.wait_ready(BOUND)  # the event thread lives on
        until(lambda: not client.outbox.items, "the queue to be sent")
        until(lambda: node.received(pattern) == len(ODD_CONTEXTS), "the node to count them")
        for context in ODD_CONTEXTS:  # with the node up, at the call
            reduced = client.report_failure(
                ValueError("bad"), service="odd", operation="context", context=context
            )
            assert reduced.pattern == pattern
        assert client.stats.reports_sent == len(ODD_CONTEXTS)
        assert client.outbox.poisoned == 0 and client.stats.reports_refused == 0
        assert node.received(pattern) == 2 * len(ODD_CONTEXTS)
        assert client._thread is not None and client._thread.is_alive()
        assert client.flush() == 0 and client.stats.stream_connected
    finally:
        client.close()


def test_the_shape_the_node_keeps_is_the_one_the_sdk_returns(node: LiveNode) -> None:
    client = Client(node.dir, stream=False, timeout=SLOW)
    context = {"amount": 1250, "customer": {"email": "a@b.co"}, "items": [{"sku": "X"}]}
    try:
        reduced = client.report_failure(
            TimeoutError("t"), service="shape", operation="kept", context=context
        )
        assert reduced.shape == "{amount:int,customer:{email:str},items:[{sku:str}]}"
        odd = client.report_failure(
            TimeoutError("t"), service="shape", operation="odd", context=ODD_CONTEXTS[2]
        )
        assert odd.shape == "{ids:[int]}"  # a set is a list, as JSON carries it
    finally:
        client.close()
    assert node.received(reduced.pattern) == 1 and node.received(odd.pattern) == 1


def test_a_queued_item_that_cannot_be_sent_is_dropped_and_the_rest_go(node: LiveNode) -> None:
    client = Client(node.dir, stream=False, timeout=SLOW)
    pattern = client.pattern_of(TimeoutError("t"), service="poison", operation="q").pattern
    body = {"service": "poison", "operation": "q", "exc_type": "TimeoutError", "message": "t"}
    try:
        client.outbox.put("/v1/failures", body | {"context": {"at": datetime.date(2024, 1, 1)}})
        client.outbox.put("/v1/failures", body)
        assert client.flush() == 1
        assert client.outbox.poisoned == 1 and not client.outbox.items
        client.report_failure(TimeoutError("t"), service="poison", operation="q")
    finally:
        client.close()
    assert node.received(pattern) == 2


# ------------------------- finding 6: what the node refuses is not counted as sent


class UpstreamError(Exception):
    pass


@pytest.mark.parametrize(
    ("message", "service"),
    [
        ("502 Bad Gateway: <html>" + "x" * 9000 + "</html>", "billing"),
        ("502 Bad Gateway: " + "\U0001f4a5" * 8000, "billing"),  # 12 bytes each in JSON
        ("timed out", "svc-" + "a" * 126),
    ],
    ids=["9-KiB-message", "astral-message", "130-char-service"],
)
def test_failures_beyond_the_apis_limits_reach_the_node(
    node: LiveNode, message: str, service: str
) -> None:
    """The node answered 422; the SDK dropped them and counted them in reports_sent."""
    client = Client(node.dir, stream=False, timeout=SLOW)
    exc = UpstreamError(message)

    @client.resilient(service=service, operation="invoice")
    def call() -> None:
        raise exc

    try:
        for _ in range(3):
            with pytest.raises(UpstreamError):
                call()
        reduced = client.report_failure(exc, service=service, operation="invoice")
    finally:
        client.close()
    assert node.received(reduced.pattern) == 4  # 3 decorated calls, 1 report_failure
    assert reduced.pattern == client.pattern_of(exc, service=service, operation="invoice").pattern
    assert client.stats.reports_refused == 0 and client.stats.errors == []


def test_a_report_the_node_refuses_is_counted_as_refused_not_sent(node: LiveNode) -> None:
    client = Client(node.dir, stream=False, timeout=SLOW)
    try:
        client.report_outcome(b"\x07" * 32, True)  # a fix the node does not know: 404
        client.flush()
        until(lambda: not client.outbox.items, "the outcome to be sent")
        assert client.stats.reports_sent == 0 and "404" in client.stats.errors[-1]
        assert client.stats.reports_refused == 1
        queued = client.stats.reports_queued
        for bad, match in [
            ({"fix": b"\x07"}, "32 bytes"),
            ({"fix": b"\x07" * 32, "attempts": 1, "successes": 2}, "successes <= attempts"),
            ({"fix": b"\x07" * 32, "attempts": 0}, "1 <= attempts"),
            ({"fix": b"\x07" * 32, "attempts": 2_000_000}, "attempts must be an integer"),
        ]:
            with pytest.raises(ValueError, match=match):  # and nothing is queued
                client.report_outcome(**bad)
        assert not client.outbox.items and client.stats.reports_queued == queued
    finally:
        client.close()


# ------------------------------------------------ finding 7: an api.json with a bad URL


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:99999",
        "http://127.0.0.1:80a",
        "http://[::1",
        "https://127.0.0.1:1",
        "http://127.0.0.1",
    ],
)
def test_a_bad_url_is_a_config_error_and_the_client_recovers(
    node: LiveNode, tmp_path: Path, url: str
) -> None:
    """ValueError went into report_failure and count_failures, nothing was noted, and
    the event thread died for good."""
    (tmp_path / "api.json").write_text(json.dumps({"url": url, "pid": os.getpid()}))
    (tmp_path / "api.token").write_text(node.token + "\n")
    client = Client(tmp_path, timeout=SLOW)
    try:
        reduced = client.report_failure(TimeoutError("t"), service="badurl", operation="q")
        assert len(client.outbox.items) == 1 and client.stats.reports_queued == 1
        assert any("bad node API url" in e for e in client.stats.errors), client.stats.errors
        with pytest.raises(ConfigError, match="bad node API url"):
            client.count_failures(reduced.pattern)
        assert client._thread is not None and client._thread.is_alive()
        before = node.received(reduced.pattern)
        point_at(tmp_path, node)  # a node writes a good api.json
        assert client.wait_ready(BOUND)
        until(lambda: not client.outbox.items, "the queued report to be sent")
        assert node.received(reduced.pattern) == before + 1
    finally:
        client.close()
    direct = Client(url=url, token=node.token, stream=False)
    try:
        direct.report_failure(TimeoutError("t"), service="badurl", operation="q")
        assert direct.stats.reports_queued == 1
        with pytest.raises(ConfigError):
            direct.count_failures(reduced.pattern)
    finally:
        direct.close()


# ------------------------------------- finding 8: a context manager used more than once


def test_a_reused_context_manager_tells_each_blocks_own_error(node: LiveNode) -> None:
    client = Client(node.dir, stream=False, timeout=SLOW)
    guard = client.resilient(service="search", operation="query", on_failure="degrade")
    seen = []
    try:
        for q in ("bad", "good", "bad", "good"):
            results = None
            with guard as r:
                if q == "bad":
                    raise TimeoutError("search timed out after 3000 ms")
                results = [f"live {q}"]
            if r.error is not None:
                results = ["cached"]
            seen.append((q, results, type(r.error).__name__))
    finally:
        client.close()
    assert (
        seen
        == [
            ("bad", ["cached"], "TimeoutError"),
            ("good", ["live good"], "NoneType"),
        ]
        * 2
    )


# --------------------------------- an api.json whose pid or start time no process has


@pytest.mark.parametrize(
    "doc",
    [
        {"pid": 2**31},  # past pid_t: os.kill raised OverflowError
        {"pid": 2**64},
        {"pid": 1, "starttime": 2**64},
    ],
)
def test_an_api_json_with_an_impossible_pid_is_a_config_error_and_the_client_recovers(
    node: LiveNode, tmp_path: Path, doc: dict[str, int]
) -> None:
    """OverflowError went into report_failure (the report neither sent nor queued)
    and count_failures, the event thread died for good, and `gossipmind report`
    on such a data dir exited 70 (internal error)."""
    (tmp_path / "api.json").write_text(json.dumps({"url": node.url, **doc}))
    (tmp_path / "api.token").write_text(node.token + "\n")
    client = Client(tmp_path, timeout=SLOW)
    try:
        reduced = client.report_failure(TimeoutError("t"), service="badpid", operation="q")
        assert len(client.outbox.items) == 1 and client.stats.reports_queued == 1
        with pytest.raises(ConfigError):
            client.count_failures(reduced)  # what report_failure returned will do
        assert client._thread is not None and client._thread.is_alive()
        before = node.received(reduced.pattern)
        point_at(tmp_path, node)
        assert client.wait_ready(BOUND)
        until(lambda: not client.outbox.items, "the queued report to be sent")
        assert node.received(reduced.pattern) == before + 1
        assert client.count_failures(reduced)["pattern"] == reduced.pattern.hex()
    finally:
        client.close()
    assert not pid_alive(2**31) and not pid_alive(2**64)
