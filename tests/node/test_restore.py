"""A node restored from an old backup must not sign a seq its key already used."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import trio
import trio.testing

from gossipmind.core.snapshot import snapshot
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import WRITE_GATE_S, open_node
from gossipmind.store.sqlite import Store
from gossipmind.testing import sample_report
from gossipmind.testnet.setup import prepare


async def test_restored_node_syncs_before_writing_and_never_equivocates(tmp_path: Path) -> None:
    net = FakeNetwork(seed=3)
    specs = prepare(tmp_path, 2, 0)
    peer_cfg = NodeConfig(data_dir=specs[0].dir, sync_interval=0.3, synchronous="NORMAL")
    me = specs[1]
    backup = tmp_path / "backup.sqlite3"
    async with open_node(peer_cfg, fake=net) as peer:
        boot = tuple(peer.transport.addrs())
        cfg = NodeConfig(data_dir=me.dir, sync_interval=0.3, synchronous="NORMAL", bootstrap=boot)
        async with open_node(cfg, fake=net) as node:
            for i in range(3):
                await node.write("pattern.report", sample_report(template=f"before backup {i} <*>"))
            node.store.conn.execute("PRAGMA wal_checkpoint(FULL)")
            shutil.copy(me.dir / "kb.sqlite3", backup)  # an old backup
            for i in range(3):
                await node.write("pattern.report", sample_report(template=f"after backup {i} <*>"))
            with trio.fail_after(10):
                while peer.store.replica.root() != node.store.replica.root():
                    await trio.sleep(0.05)
        for suffix in ("", "-wal", "-shm"):
            (me.dir / f"kb.sqlite3{suffix}").unlink(missing_ok=True)
        shutil.copy(backup, me.dir / "kb.sqlite3")  # restore the old backup
        async with open_node(cfg, fake=net) as node:
            assert node.store.replica.last_seq[node.identity.public] == 3  # the backup's view
            with trio.fail_after(15):
                op = await node.write("pattern.report", sample_report(template="after restore <*>"))
            assert op.seq == 7  # after seqs 1-6, which sync brought back before the write
            with trio.fail_after(10):
                while peer.store.replica.root() != node.store.replica.root():
                    await trio.sleep(0.05)
            assert snapshot(peer.store.replica)["equivocations"] == []
    with Store.open(me.dir / "kb.sqlite3") as store:
        assert store.replica.last_seq[me.key] == 7


async def test_only_the_first_write_waits_for_a_sync_that_never_comes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A bootstrap peer that never answers: the first write waits WRITE_GATE_S
    (virtual time), then goes ahead; the next writes do not wait at all."""
    specs = prepare(tmp_path, 2, 0)
    gone = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf"
    cfg = NodeConfig(
        data_dir=specs[1].dir, sync_interval=0.3, synchronous="NORMAL", bootstrap=(gone,)
    )
    async with open_node(cfg, fake=FakeNetwork(seed=4)) as node:
        start = trio.current_time()
        await node.write("pattern.report", sample_report(template="first <*>"))
        assert trio.current_time() - start >= WRITE_GATE_S
        assert not node.synced.is_set()
        start = trio.current_time()
        for i in range(3):
            await node.write("pattern.report", sample_report(template=f"then {i} <*>"))
        assert trio.current_time() - start < 1.0  # virtual time: no gate
        assert node.store.replica.last_seq[node.identity.public] == 4


async def test_a_first_session_refused_as_busy_is_retried_soon(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The write gate waits for a completed session; one the peer refused as busy
    (it was syncing with another peer) used to wait for the next periodic round
    (here 60 s), so a node's first writes stalled (a benchmark measured 0 ops/s)."""
    net = FakeNetwork(seed=5)
    specs = prepare(tmp_path, 2, 0)
    cfgs = [NodeConfig(data_dir=s.dir, sync_interval=60, synchronous="NORMAL") for s in specs]
    async with open_node(cfgs[0], fake=net) as a, open_node(cfgs[1], fake=net) as b:
        low, high = sorted((a, b), key=lambda n: n.transport.peer_id)  # low starts the session
        async with high._session_lock:  # high is busy with another peer
            await low.transport.connect(high.transport.addrs()[0])
            with trio.fail_after(5):
                while not low.sync.declined_by_reason.get("busy"):
                    await trio.sleep(0.01)
        with trio.fail_after(5):  # virtual time: retried, not the 30-90 s periodic round
            await low.synced.wait()


async def test_a_write_past_the_gate_without_a_sync_is_logged(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A restored node whose peers did not answer signed after 10 s in silence, and
    its key was flagged as an equivocator once the peers came back: the log said
    nothing of the write that went ahead unsynced."""
    specs = prepare(tmp_path, 2, 0)
    gone = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf"
    cfg = NodeConfig(
        data_dir=specs[1].dir, sync_interval=0.3, synchronous="NORMAL", bootstrap=(gone,)
    )
    async with open_node(cfg, fake=FakeNetwork(seed=4)) as node:
        for i in range(2):
            await node.write("pattern.report", sample_report(template=f"w {i} <*>"))
    said = [r for r in caplog.records if "without a completed sync" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
