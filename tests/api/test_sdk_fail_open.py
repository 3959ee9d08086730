"""The SDK never gets in the agent's way: node not started, misconfigured or hung, odd errors."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from gossipmind.api.client import Client, Fix
from gossipmind.api.transport import Http
from gossipmind.core.errors import ConfigError, NetworkError

DOWN = {"url": "http://127.0.0.1:9", "token": "x" * 20, "stream": False}
KEYED = {
    "scope": "payments",
    "steps": [
        {"type": "idempotency_key", "header": "Idempotency-Key"},
        {
            "type": "retry",
            "max_attempts": 3,
            "base_ms": 1,
            "cap_ms": 5,
            "jitter": "none",
            "on": ["timeout"],
        },
    ],
    "budget_ms": 5000,
}


class Upstream(Exception):
    """The agent's own error: an HTTP 503 whose headers come from a remote server."""

    def __init__(self, headers: Any) -> None:
        super().__init__("upstream unavailable")
        self.response = type("R", (), {"status_code": 503, "headers": headers})


class BrokenHeaders(dict[str, str]):
    def get(self, *_: Any) -> Any:
        raise RuntimeError("a headers object that cannot be read")


@pytest.mark.parametrize(
    "headers", [{"Retry-After": "inf"}, {"Retry-After": "1e999"}, BrokenHeaders()]
)
def test_an_odd_error_never_turns_into_an_sdk_error(headers: Any) -> None:
    client = Client(**DOWN)  # type: ignore[arg-type]

    def call() -> str:
        raise Upstream(headers)

    with pytest.raises(Upstream):
        client.resilient(service="search", operation="query")(call)()
    degrade = client.resilient(
        service="search", operation="query", on_failure="degrade", default="cached"
    )
    assert degrade(call)() == "cached"

    async def acall() -> str:
        raise Upstream(headers)

    with pytest.raises(Upstream):
        asyncio.run(client.resilient(service="search", operation="query")(acall)())
    with client.resilient(service="search", operation="query", on_failure="degrade") as r:
        call()
    assert isinstance(r.error, Upstream)
    client.close()


def test_reports_queue_while_the_node_has_not_started(tmp_path: Path) -> None:
    client = Client(tmp_path, stream=False)  # no api.json yet: the node is not running
    reduced = client.report_failure(TimeoutError("t"), service="search", operation="query")
    assert reduced.pattern
    client.report_outcome(b"\x01" * 32, True)
    assert len(client.outbox.items) == 2 and client.stats.reports_queued == 2
    assert client.flush() == 0
    with pytest.raises(NetworkError):
        client.count_failures(reduced.pattern)
    assert client.resilient(service="search", operation="query")(lambda x: x + 1)(1) == 2
    client.close()


def keyed_client(tmp_path: Path) -> Client:
    """A client whose cache holds an accepted keyed fix for payments/charge."""
    client = Client(tmp_path, stream=False)
    fix = Fix(b"\x01" * 32, b"\x02" * 32, KEYED, "", "low", 3, 3, "payments", "charge")
    client._cache[fix.pattern] = {fix.id: fix}
    return client


def flaky_charge() -> Callable[..., dict[str, Any]]:
    calls: list[str | None] = []

    def charge(amount: int, idempotency_key: str | None = None) -> dict[str, Any]:
        calls.append(idempotency_key)
        if len(calls) == 1:
            raise TimeoutError("charge timed out")
        return {"amount": amount, "keys": list(calls)}

    return charge


@pytest.mark.parametrize("api_json", [None, "{not json", '{"url": "http://10.0.0.1:80"}'])
def test_a_successful_call_is_never_replaced_by_an_sdk_error(
    tmp_path: Path, api_json: str | None
) -> None:
    if api_json is not None:  # a misconfigured data dir, not just a node that is down
        (tmp_path / "api.json").write_text(api_json)
        (tmp_path / "api.token").write_text("x" * 20)
    client = keyed_client(tmp_path)
    pay = client.resilient(service="payments", operation="charge", idempotent=False)
    receipt = pay(flaky_charge())(4999)
    assert receipt["amount"] == 4999 and len(set(receipt["keys"])) == 1
    assert client.stats.recoveries == 1 and len(client.outbox.items) >= 1
    if api_json is not None:  # the configuration problem is told, not swallowed
        assert client.stats.errors
        with pytest.raises(ConfigError):
            client.count_failures(b"\x02" * 32)

    async def main() -> dict[str, Any]:
        charge = flaky_charge()

        @client.resilient(service="payments", operation="charge", idempotent=False)
        async def apay(amount: int, idempotency_key: str | None = None) -> dict[str, Any]:
            return charge(amount, idempotency_key=idempotency_key)

        return await apay(10)

    assert asyncio.run(main())["amount"] == 10
    client.close()


# ------------------------------------------------------------ a hung node, async agents


@pytest.fixture
def hung_client() -> Iterator[Client]:
    """A client of a node that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    url = f"http://127.0.0.1:{srv.getsockname()[1]}"
    client = Client(url=url, token="x" * 20, stream=False, timeout=0.25)
    yield client
    srv.close()
    client.close()


def failing_calls(client: Client) -> list[Callable[[], Awaitable[Any]]]:
    decorated = client.resilient(
        service="search", operation="query", on_failure="degrade", default="fallback"
    )

    @decorated
    async def query() -> str:
        raise TimeoutError("upstream timed out")

    async def block() -> Any:
        async with client.resilient(service="search", operation="query", on_failure="degrade"):
            raise TimeoutError("upstream timed out")

    return [query, block]


@pytest.fixture
def io_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread of every HTTP request the SDK makes to its node."""
    seen: list[int] = []
    real = Http.request

    def request(self: Http, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        seen.append(threading.get_ident())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Http, "request", request)
    return seen


def test_asyncio_event_loop_never_waits_for_a_hung_node(
    hung_client: Client, io_threads: list[int]
) -> None:
    async def main() -> int:
        for call in failing_calls(hung_client):
            assert await call() in ("fallback", None)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    # the SDK did talk to the (hung) node, each request timing out...
    assert len(io_threads) >= 2 and hung_client.stats.reports_queued == 2
    # ...always from a worker thread, never on the agent's event loop
    assert loop_thread not in io_threads


def test_trio_event_loop_never_waits_for_a_hung_node(
    hung_client: Client, io_threads: list[int]
) -> None:
    async def main() -> int:
        for call in failing_calls(hung_client):
            assert await call() in ("fallback", None)
        return threading.get_ident()

    loop_thread = trio.run(main)
    assert len(io_threads) >= 2 and hung_client.stats.reports_queued == 2
    assert loop_thread not in io_threads


# ------------------------------------------------ a fix this SDK cannot apply (review)

UNREADABLE = [
    KEYED | {"budget_ms": None},  # retries without a budget
    KEYED | {"steps": [*KEYED["steps"], {"type": "hedge", "copies": 2}]},  # a newer step type
    KEYED | {"steps": [KEYED["steps"][0], {**KEYED["steps"][1], "future": 1}]},
]


@pytest.mark.parametrize("recipe", UNREADABLE)
def test_a_fix_the_sdk_cannot_apply_never_replaces_the_call(
    tmp_path: Path, recipe: dict[str, Any]
) -> None:
    """A cached fix whose recipe this SDK's executor refuses (a newer node's, say)
    made the decorated call raise ``SchemaError``: a payment was never attempted,
    a failed search lost its own error. Now the call goes on as if no fix were known."""
    recipe = {k: v for k, v in recipe.items() if v is not None}
    client = Client(tmp_path, stream=False)
    for fid, (svc, op, err) in enumerate(
        [("payments", "charge", None), ("search", "query", TimeoutError("search timed out"))]
    ):
        pattern = client.pattern_of(err, service=svc, operation=op).pattern if err else bytes(32)
        fix = Fix(
            bytes([fid + 1]) * 32,
            pattern,
            recipe | {"scope": f"{svc}.{op}"},
            "",
            "low",
            service=svc,
            operation=op,
        )
        client._cache[pattern] = {fix.id: fix}
    made: list[str | None] = []

    @client.resilient(service="payments", operation="charge", idempotent=False)
    def pay(amount: int, idempotency_key: str | None = None) -> int:
        made.append(idempotency_key)
        return amount

    @client.resilient(service="search", operation="query")
    def search() -> str:
        raise TimeoutError("search timed out")

    assert pay(4999) == 4999 and made == [None]  # the call ran once, as written
    with pytest.raises(TimeoutError):
        search()

    @client.resilient(service="payments", operation="charge", idempotent=False)
    async def apay(amount: int, idempotency_key: str | None = None) -> int:
        made.append(idempotency_key)
        return amount

    @client.resilient(service="search", operation="query")
    async def asearch() -> str:
        raise TimeoutError("search timed out")

    assert asyncio.run(apay(10)) == 10 and made == [None, None]
    with pytest.raises(TimeoutError):
        trio.run(asearch)
    assert any("not applied" in e for e in client.stats.errors)
    assert client.stats.fixes_applied == 0  # none was: each recipe was refused
    client.close()


def test_a_client_without_a_stream_stops_applying_a_fix_the_node_revoked(tmp_path: Path) -> None:
    """``stream=False`` has no event stream to hear of a revocation, and used to keep the
    node's first answer for good: a revoked fix was applied for as long as it ran. It now
    asks the node at each failed call (as documented), and uses its last answer only
    while the node cannot be asked. (The node is stood in for by its answers: 200 with
    the accepted fix, then 404 once revoked, then down.)"""
    client = Client(tmp_path, stream=False)
    err = TimeoutError("search timed out")
    pattern = client.pattern_of(err, service="search", operation="query").pattern
    recipe = KEYED | {"scope": "search.query", "steps": KEYED["steps"][1:]}
    doc = {"fix": "ab" * 32, "pattern": pattern.hex(), "recipe": recipe, "status": "accepted"}
    answers: list[Any] = [(200, doc), (404, {"error": "no accepted fix"}), (200, doc), None]

    def node(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if not path.startswith("/v1/fix?"):
            return 202, {}  # the outbox's reports and outcomes
        answer = answers.pop(0)
        if answer is None:
            raise NetworkError("the node is down")
        return answer  # type: ignore[no-any-return]

    client._call = node  # type: ignore[method-assign]
    attempts: list[int] = []

    @client.resilient(service="search", operation="query")
    def search() -> str:
        attempts.append(1)
        raise TimeoutError("search timed out")

    for expected in (3, 1, 3, 3):  # accepted; revoked; accepted again; node down: last answer
        attempts.clear()
        with pytest.raises(TimeoutError):
            search()
        assert len(attempts) == expected
    assert answers == []
    client.close()


def test_a_canary_does_not_cache_a_fix_revoked_while_it_asked(tmp_path: Path) -> None:
    """A canary asks the node even with a live stream; the fix came back accepted, the
    stream told its revocation while the answer was on its way, and the answer was then
    cached: the canary applied the revoked fix until its stream reconnected."""
    client = Client(tmp_path, canary=True, stream=False)
    client._streams = True  # as with a live stream (its thread not started here)
    client._resume = lambda: None  # type: ignore[method-assign]  # (it would start one)
    client._ready.set()
    pattern = bytes(32)
    doc = {"fix": "ab" * 32, "pattern": pattern.hex(), "recipe": KEYED, "status": "accepted"}

    def node(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if path.startswith("/v1/fix?"):
            client._apply_event("fix", doc | {"status": "revoked"})  # meanwhile, the stream
            return 200, doc
        return 202, {}

    client._call = node  # type: ignore[method-assign]
    assert client.fix_for(pattern) is not None  # the node's answer, used once
    assert client._cached(pattern) is None
    client._streams = False
    client.close()


def test_the_preventive_fix_is_the_best_ranked_not_the_most_used(tmp_path: Path) -> None:
    """Among keyed fixes retrying as many classes, the preventive fix was picked by raw
    successes: 1 000 of 100 000 attempts beat 10 of 10 (s9 recipes review, nit 13)."""
    client = Client(tmp_path, stream=False)
    try:
        common = {"recipe": KEYED, "service": "payments", "operation": "charge"}
        worn = Fix(
            b"\x01" * 32,
            b"\x0a" * 32,
            rationale="",
            risk="low",
            attempts=100_000,
            successes=1_000,
            **common,
        )
        good = Fix(
            b"\x02" * 32,
            b"\x0b" * 32,
            rationale="",
            risk="low",
            attempts=10,
            successes=10,
            **common,
        )
        client._cache = {worn.pattern: {worn.id: worn}, good.pattern: {good.id: good}}
        assert client.preventive_fix("payments", "charge") == good
    finally:
        client.close()


def test_a_client_without_a_stream_stops_applying_a_revoked_keyed_fix_preventively(
    tmp_path: Path,
) -> None:
    """A non-idempotent call gets the keyed fix from the first attempt, from the cache
    (``preventive_fix``), without a failed call to make the client ask the node. A
    ``stream=False`` client refreshed its cache only on such a lookup, so a revoked keyed
    fix kept being applied to every call for as long as it ran, failed attempts and all
    (sdk.md: it "stops applying a revoked fix at its next failed call of that pattern").
    (s9 review; the node is stood in for by its answers: the fix, then 404 once revoked.)"""
    client = Client(tmp_path, stream=False)
    err = TimeoutError("charge timed out")
    pattern = client.pattern_of(err, service="payments", operation="charge").pattern
    doc = {"fix": "cd" * 32, "pattern": pattern.hex(), "recipe": KEYED, "status": "accepted"}
    doc |= {"service": "payments", "operation": "charge"}
    answers: list[Any] = [(200, doc), (404, {"error": "no accepted fix"})]
    asked: list[str] = []

    def node(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if not path.startswith("/v1/fix?"):
            return 202, {}  # the outbox's reports and outcomes
        asked.append(path)
        return answers.pop(0) if answers else (404, {"error": "no accepted fix"})  # type: ignore[no-any-return]

    client._call = node  # type: ignore[method-assign]
    keys: list[str | None] = []

    @client.resilient(service="payments", operation="charge", idempotent=False)
    def charge(idempotency_key: str | None = None) -> str:
        keys.append(idempotency_key)
        if len(keys) == 1 or keys[-2] != idempotency_key:  # each call's first attempt fails
            raise TimeoutError("charge timed out")
        return "charged"

    with pytest.raises(TimeoutError):  # no key: never retried; the node names its fix
        charge()
    assert keys == [None] and len(asked) == 1
    keys.clear()
    assert charge() == "charged"  # the keyed fix from the first attempt; its first fails
    assert len(keys) == 2 and keys[0] is not None
    # the node revoked the fix meanwhile: after that failed attempt the client knows it
    keys.clear()
    with pytest.raises(TimeoutError):
        charge()
    assert keys == [None]  # run as written, not under the revoked fix
    # the same with a coroutine function
    answers[:] = [(200, doc), (404, {"error": "no accepted fix"})]
    keys.clear()

    @client.resilient(service="payments", operation="charge", idempotent=False)
    async def acharge(idempotency_key: str | None = None) -> str:
        return charge.__wrapped__(idempotency_key)  # type: ignore[no-any-return]

    for expect_keyed in (False, True, False):
        keys.clear()
        with contextlib.suppress(TimeoutError):
            asyncio.run(acharge())
        assert (keys[0] is not None) is expect_keyed
    client.close()


def test_a_canary_without_a_stream_drops_an_accepted_fix_the_node_no_longer_has(
    tmp_path: Path,
) -> None:
    """A canary asks for a provisional fix when none is accepted: a 200 whose fix is not
    accepted says the one this client cached (accepted, then revoked) is gone. The cache
    kept it, and used it while the node was down and for the keyed fixes of
    non-idempotent calls (s9 review)."""
    client = Client(tmp_path, stream=False, canary=True)
    err = TimeoutError("charge timed out")
    pattern = client.pattern_of(err, service="payments", operation="charge").pattern
    doc = {"fix": "cd" * 32, "pattern": pattern.hex(), "recipe": KEYED, "status": "accepted"}
    doc |= {"service": "payments", "operation": "charge"}
    provisional = doc | {"fix": "ef" * 32, "status": "proposed"}
    answers: list[Any] = [(200, doc), (200, provisional), None]

    def node(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        answer = answers.pop(0)
        if answer is None:
            raise NetworkError("the node is down")
        return answer  # type: ignore[no-any-return]

    client._call = node  # type: ignore[method-assign]
    first = client.fix_for(pattern)
    assert first is not None and first.id == bytes.fromhex("cd" * 32)
    second = client.fix_for(pattern)
    assert second is not None and second.id == bytes.fromhex("ef" * 32)
    assert client.preventive_fix("payments", "charge") is None  # the revoked one is gone
    assert client.fix_for(pattern) is None  # node down: its last answer had no accepted fix
    client.close()
