"""A node whose store fails a write stops, loudly, whichever path the write took.

The failure is real: SQLite's ``max_page_count`` makes the database file full
("database or disk is full"), as a full disk would.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from gossipmind.bench.catchup import build_history
from gossipmind.core.errors import StoreError
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node
from gossipmind.store.sqlite import Store
from gossipmind.testing import sample_report
from gossipmind.testnet.setup import prepare


def fill_up(node: Node) -> None:
    """Let the store's file grow by no more than a page from here on."""
    pages = node.store.conn.execute("PRAGMA page_count").fetchone()[0]
    node.store.conn.execute(f"PRAGMA max_page_count = {pages + 1}")


async def test_a_local_write_that_fails_is_not_acknowledged_and_stops_the_node(
    tmp_path: Path,
) -> None:
    spec = prepare(tmp_path, 1, 0)[0]
    cfg = NodeConfig(data_dir=spec.dir, sync_interval=60, synchronous="NORMAL", learn=False)
    written = []
    with pytest.raises(StoreError, match="full"):
        async with open_node(cfg, fake=FakeNetwork(seed=1)) as node:
            fill_up(node)
            with trio.fail_after(30):
                with pytest.raises(StoreError, match="full"):  # the caller is told
                    for i in range(2_000):
                        body = sample_report(template=f"filler {i} " + "x" * 200 + " <*>")
                        written.append(await node.write("pattern.report", body))
                await trio.sleep_forever()  # the node stops itself
    assert written  # some writes fit first
    with Store.open(spec.dir / "kb.sqlite3") as store:  # every acknowledged write is there
        assert all(op.id in store.replica.meta for op in written)


async def test_a_sync_the_store_cannot_keep_stops_the_node_that_served_it(
    tmp_path: Path,
) -> None:
    build_history(tmp_path, 2, 0, 3_000)  # node-0 has 3 000 ops node-1 lacks
    net = FakeNetwork(seed=2)
    cfgs = [
        NodeConfig(
            data_dir=tmp_path / f"node-{i}", sync_interval=60, synchronous="NORMAL", learn=False
        )
        for i in range(2)
    ]
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_node(cfgs[0], fake=net))
        with pytest.raises(StoreError, match="full"):
            async with open_node(cfgs[1], fake=net) as b:
                fill_up(b)
                # the smaller peer id starts the session on a new connection: make
                # it the full node's *inbound* session, whose errors a stream
                # handler used to log and swallow
                first, second = sorted([a, b], key=lambda n: n.transport.peer_id)
                await first.transport.connect(second.transport.addrs()[0])
                with trio.fail_after(30):
                    await trio.sleep_forever()
        assert a.store.broken is None  # the peer is unaffected
