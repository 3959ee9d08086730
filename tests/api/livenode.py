"""A real node with its HTTP API on 127.0.0.1, in a thread of the test process, for
the SDK's tests (``test_sdk_review.py``, ``test_sdk_outbox.py``)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from gossipmind.api.client import Client
from gossipmind.api.server import serve_api
from gossipmind.api.transport import Http
from gossipmind.core.policy import Policy
from gossipmind.core.schema import fix_id
from gossipmind.core.snapshot import pattern_row
from gossipmind.learn.patterns import Failure, reduce
from gossipmind.learn.synth import synthesize
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import open_node
from gossipmind.testnet.setup import prepare

BOUND = 30.0  # s: the most any wait below may take (a test that would hang fails instead)
SLOW = 10.0  # s: the SDK's timeout where timing out is not the point (a loaded machine)
CHARGE = Failure(
    "payments", "charge", "TimeoutError", "charge for someone@example.com timed out after 30000 ms"
)


class LiveNode:
    """A real node with its API, in a thread of this process, holding one accepted fix
    for ``CHARGE`` that carries an idempotency key (payments at low risk).

    ``LiveNode(root)`` sets up a network under ``root``; ``LiveNode.again(node)`` is
    the same node started anew on its data dir (after ``node.stop()``)."""

    def __init__(self, root: Path, data_dir: Path | None = None) -> None:
        self.root = root
        self.pattern = reduce(CHARGE).pattern
        self.fix = b""
        self.dir = data_dir or root
        self.restarted = data_dir is not None
        self.url = ""
        self.token = ""
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._scope: trio.CancelScope | None = None
        self._trio: trio.lowlevel.TrioToken | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="test-node")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # told to the test by start()
            self.error = exc
            self.ready.set()

    @classmethod
    def again(cls, node: LiveNode) -> LiveNode:
        live = cls(node.root, node.dir)
        live.fix = node.fix
        return live.start()

    async def _main(self) -> None:
        if not self.restarted:
            self.dir = prepare(self.root, 2, 1, policy=Policy(scope_risk={}))[1].dir
        cfg = NodeConfig(data_dir=self.dir, synchronous="NORMAL", learn=False, report_window_ms=100)
        with trio.CancelScope() as scope:
            self._scope, self._trio = scope, trio.lowlevel.current_trio_token()
            async with open_node(cfg, fake=FakeNetwork()) as node, trio.open_nursery() as n:
                self.url = await n.start(serve_api, node)
                self.token = (self.dir / "api.token").read_text().strip()
                if self.restarted:
                    self.ready.set()
                    await trio.sleep_forever()
                node.report_failure(CHARGE)
                await node.reporter.flush()
                r = node.store.replica
                cand = synthesize(pattern_row(r.fold.patterns[self.pattern], 1), r.policy)
                recipe = cand.candidates[0].recipe
                assert any(s["type"] == "idempotency_key" for s in recipe["steps"])
                body = {"pattern": self.pattern, "recipe": recipe, "risk": "low"}
                await node.write("fix.propose", body | {"rationale": "", "origin": "synth"})
                self.fix = fix_id(self.pattern, recipe)
                verdict = {"fix": self.fix, "scope": recipe["scope"], "verdict": "accept"}
                await node.write("fix.attest", verdict | {"reasons": []})
                self.ready.set()
                await trio.sleep_forever()

    def hang(self, release: threading.Event) -> threading.Thread:
        """Block the node's event loop until ``release`` (at most BOUND): a hung node
        (the kernel still accepts connections; nothing answers)."""
        assert self._trio is not None
        token = self._trio
        held = threading.Event()

        def block() -> None:
            held.set()
            release.wait(BOUND)

        thread = threading.Thread(
            target=trio.from_thread.run_sync, args=(block,), kwargs={"trio_token": token}
        )
        thread.start()
        assert held.wait(BOUND)
        return thread

    def start(self) -> LiveNode:
        self.thread.start()
        assert self.ready.wait(BOUND), "the node did not start"
        if self.error is not None:
            raise RuntimeError(f"the node failed to start: {self.error!r}") from self.error
        return self

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        if self._trio is not None and self._scope is not None:
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._trio)
        self.thread.join(BOUND)

    def http(self) -> Http:
        return Http(self.url, self.token, timeout=5)

    def received(self, pattern: bytes) -> int:
        """Failures of ``pattern`` the node took: counted, or waiting for its window."""
        http = self.http()
        try:
            status, doc = http.request("GET", f"/v1/failures/count?pattern={pattern.hex()}")
        finally:
            http.close()
        assert status == 200, doc
        return int(doc["count"]) + int(doc["local_unsent"])

    def outcomes(self) -> tuple[int, int]:
        """The fix's (attempts, successes), as the node's fold has them."""
        http = self.http()
        try:
            status, rows = http.request("GET", f"/v1/fixes?pattern={self.pattern.hex()}")
        finally:
            http.close()
        assert status == 200, rows
        row = next(r for r in rows if r["fix"] == self.fix.hex())
        return int(row["attempts"]), int(row["successes"])


def until(check: Callable[[], bool], what: str) -> None:
    """Wait for ``check()`` (at most BOUND, polling every 20 ms)."""
    deadline = time.monotonic() + BOUND
    for _ in range(int(BOUND / 0.02) + 1):
        if check():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def point_at(agent_dir: Path, node: LiveNode) -> None:
    """The node "starts" for an agent whose data dir is ``agent_dir``."""
    shutil.copy(node.dir / "api.token", agent_dir / "api.token")
    os.chmod(agent_dir / "api.token", 0o600)
    shutil.copy(node.dir / "api.json", agent_dir / "api.json")


def keyed_pay(client: Client) -> Callable[..., dict[str, Any]]:
    """The doc's ``pay``: non-idempotent, run under the cached keyed fix for CHARGE."""

    @client.resilient(service="payments", operation="charge", idempotent=False)
    def pay(customer: str, amount: int, idempotency_key: str | None = None) -> dict[str, Any]:
        return {"status": "succeeded", "amount": amount, "key": idempotency_key}

    return pay


def record_requests(monkeypatch: Any) -> list[tuple[str, str]]:
    """(thread name, path) of every request the SDK makes to its node from now on."""
    seen: list[tuple[str, str]] = []
    real = Http.request

    def request(self: Http, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        seen.append((threading.current_thread().name, path))
        return real(self, method, path, body)

    monkeypatch.setattr(Http, "request", request)
    return seen
