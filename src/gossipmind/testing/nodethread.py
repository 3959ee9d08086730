"""A real node with its HTTP API in a background thread, holding one accepted fix.

For synchronous code (the SDK, benchmarks, doc examples) that needs a live node.
"""

from __future__ import annotations

import threading
from pathlib import Path

import trio

from gossipmind.api.server import serve_api
from gossipmind.core.policy import Policy
from gossipmind.core.schema import fix_id
from gossipmind.core.snapshot import pattern_row
from gossipmind.learn.patterns import Failure, reduce
from gossipmind.learn.synth import synthesize
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import open_node
from gossipmind.testnet.setup import prepare

DEFAULT_FAILURE = Failure(
    "search", "query", "TimeoutError", "timed out after 3000 ms", 504, None, 3000
)


class NodeThread:
    """``with NodeThread(root) as nt:`` — ``nt.dir`` is the data dir, ``nt.fix`` the fix id.

    The node is a tier-1 verifier; it reports ``failure`` once, proposes the rule
    synthesizer's first candidate for its pattern and accepts it.
    """

    def __init__(
        self, root: Path, failure: Failure = DEFAULT_FAILURE, policy: Policy | None = None
    ):
        self.root = root
        self.failure = failure
        self.policy = policy
        self.pattern = reduce(failure).pattern
        self.fix = b""
        self.dir = root
        self.ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="gossipmind-node")

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller thread by __enter__
            self._error = exc
            self.ready.set()

    async def _main(self) -> None:
        specs = prepare(self.root, 2, 1, policy=self.policy)
        cfg = NodeConfig(data_dir=specs[1].dir, synchronous="NORMAL", learn=False)
        with trio.CancelScope() as scope:
            self._stop = scope
            self._token = trio.lowlevel.current_trio_token()
            async with open_node(cfg, fake=FakeNetwork()) as node, trio.open_nursery() as n:
                await n.start(serve_api, node)
                node.report_failure(self.failure)
                await node.reporter.flush()
                r = node.store.replica
                row = pattern_row(r.fold.patterns[self.pattern], 1)
                cand = synthesize(row, r.policy).candidates[0]
                body = {
                    "pattern": self.pattern,
                    "recipe": cand.recipe,
                    "risk": cand.risk,
                    "rationale": cand.rationale,
                    "origin": "synth",
                }
                await node.write("fix.propose", body)
                self.fix = fix_id(self.pattern, cand.recipe)
                verdict = {
                    "fix": self.fix,
                    "scope": cand.recipe["scope"],
                    "verdict": "accept",
                    "reasons": [],
                }
                await node.write("fix.attest", verdict)
                self.dir = specs[1].dir
                self.ready.set()
                await trio.sleep_forever()

    def __enter__(self) -> NodeThread:
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the node did not start within 30 s")
        if self._error is not None:
            raise RuntimeError(f"the node failed to start: {self._error!r}") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.cancel, trio_token=self._token)
        self.thread.join(10)
