"""A running node's store checkpoints on its own thread, and says so in its status
(``GET /v1/status`` → ``checkpoints``; store.checkpoint)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import open_node
from gossipmind.store import checkpoint
from gossipmind.testing import sample_report
from gossipmind.testnet.setup import prepare


async def test_a_writing_node_checkpoints_in_the_background_and_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a log limit of 64 KiB, 150 local writes pass it several times: the
    status counts background checkpoints and no failed one, and no checkpoint
    statement ran on the writer's connection (SQLite's own autocheckpoint is off:
    tests/store/test_wal_limit.py)."""
    monkeypatch.setattr(checkpoint, "WAL_SIZE_LIMIT", 64 * 1024)
    (spec,) = prepare(tmp_path, 1, 0)
    cfg = NodeConfig(data_dir=spec.dir, synchronous="NORMAL", learn=False)
    async with open_node(cfg, fake=FakeNetwork(seed=3)) as node:
        on_loop: list[str] = []
        node.store.conn.set_trace_callback(on_loop.append)
        for k in range(150):
            await node.write("pattern.report", sample_report(template=f"ckpt {k} <*>"))
        with trio.fail_after(30):
            while not node.store.checkpoints.wait_idle(0):
                await trio.sleep(0.01)
        shown = node.status()["checkpoints"]
        assert shown["background"] >= 2, shown
        assert shown["failed"] == 0 and shown["last_error"] == ""
        assert not [s for s in on_loop if "checkpoint" in s.lower()]
    assert not (spec.dir / "kb.sqlite3-wal").exists()  # a clean stop
