"""A node reads its key and opens its store on worker threads: opening replays
every op (~4 s at 100 000 ops) and a passphrase costs a scrypt, and the other
nodes of the process (``--per-process``) and its signal handling run meanwhile."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import trio

from gossipmind.core.identity import Identity
from gossipmind.net.fake import FakeNetwork
from gossipmind.node import opening
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import open_node
from gossipmind.store.datadir import DataDir
from gossipmind.store.seqnos import SPAN
from gossipmind.store.sqlite import Store
from gossipmind.testing import sample_report
from gossipmind.testnet.setup import prepare


def config(tmp_path: Path) -> NodeConfig:
    return NodeConfig(data_dir=prepare(tmp_path, 1, 0)[0].dir, synchronous="NORMAL", learn=False)


async def test_the_key_and_the_store_are_read_while_the_event_loop_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(tmp_path)
    ticks: list[str] = []
    real_key, real_store = opening.read_key, opening.open_store

    def read_key(path: Path, passphrase: str | None) -> Identity:
        # trio.from_thread only works from a trio worker thread, and returns only
        # once the event loop has run the call: the loop is free meanwhile
        trio.from_thread.run_sync(ticks.append, "key")
        return real_key(path, passphrase)

    def open_store(c: NodeConfig) -> Store:
        trio.from_thread.run_sync(ticks.append, "store")
        return real_store(c)

    monkeypatch.setattr(opening, "read_key", read_key)
    monkeypatch.setattr(opening, "open_store", open_store)
    with trio.fail_after(20):
        async with open_node(cfg, fake=FakeNetwork()) as node:
            assert node.status()["ops"] >= 1
            assert node.status()["key"] == real_key(DataDir(cfg.data_dir).key).public.hex()
    assert ticks == ["key", "store"]


async def test_a_node_cancelled_while_its_store_opens_closes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The open is not abandoned on cancellation (an abandoned thread would hold
    the store's lock after the node is gone): it completes, then is closed."""
    cfg = config(tmp_path)
    real_store = opening.open_store
    scope = trio.CancelScope()

    def open_store(c: NodeConfig) -> Store:
        trio.from_thread.run_sync(scope.cancel)  # cancelled while the store opens
        return real_store(c)

    monkeypatch.setattr(opening, "open_store", open_store)
    entered = False
    with trio.fail_after(20):
        with scope:
            async with open_node(cfg, fake=FakeNetwork()):
                entered = True
    assert scope.cancelled_caught and not entered
    Store.open(DataDir(cfg.data_dir).store).close()  # the lock was released


async def test_a_node_whose_clock_stepped_back_gossips_past_its_last_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real libp2p: the node reserves its gossip seqnos in its store before its
    transport starts, so after a restart with the clock an hour back its first
    message id is past every id the last run could use (store/seqnos.py)."""
    cfg = config(tmp_path)
    with trio.fail_after(30):
        async with open_node(cfg) as node:
            first = node.transport._pubsub.counter  # type: ignore[attr-defined]
            await node.write("pattern.report", sample_report())
            last = node.transport._pubsub.counter  # type: ignore[attr-defined]
    back = types.SimpleNamespace(time_ns=lambda: first - 3_600 * 10**9)
    monkeypatch.setattr(opening, "time", back)
    with trio.fail_after(30):
        async with open_node(cfg) as node:
            again = node.transport._pubsub.counter  # type: ignore[attr-defined]
            assert again == first + SPAN > last
