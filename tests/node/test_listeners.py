"""Op and fix-event listeners: a slow one is dropped, never the node.

A peer can make one ingest apply more ops than any listener's buffer holds
(park ops behind a gap, then fill it). The node must survive that, keep
reporting fix transitions, and end a slow subscriber's channel cleanly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from gossipmind.core.identity import load_key
from gossipmind.core.ops import Op
from gossipmind.core.policy import Policy
from gossipmind.core.schema import fix_id
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.listeners import MAX_LISTENERS, Listeners, TooManyListeners
from gossipmind.node.node import open_node
from gossipmind.store.datadir import DataDir
from gossipmind.store.sqlite import Store
from gossipmind.testing import sample_recipe, sample_report
from gossipmind.testnet.setup import prepare

FLOOD = 10_050  # more than the default subscribe() buffer (10,000)


@pytest.fixture(scope="module")
def flood(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes], bytes]:
    """A testnet of an admin and a verifier; the verifier's FLOOD reports, then a
    proposal and its acceptance, as raw ops the admin has not seen."""
    root = tmp_path_factory.mktemp("flood")
    specs = prepare(root, 2, 1, policy=Policy(open_membership=False))
    verifier = DataDir(specs[1].dir)
    ident = load_key(verifier.key.read_bytes(), None)
    report = sample_report()
    recipe = sample_recipe("search.query")  # a fix has its pattern's scope
    fix = fix_id(report["pattern"], recipe)
    with Store.open(verifier.store) as store:
        requests: list[tuple[str, dict[str, object], int]] = [
            ("pattern.report", sample_report(template=f"flood {i} <*>"), 1_000 + i)
            for i in range(FLOOD)
        ]
        requests.append(("pattern.report", report, 19_999))  # the fix's pattern is known
        propose = {
            "pattern": report["pattern"],
            "recipe": recipe,
            "risk": "low",
            "rationale": "test",
            "origin": "synth",
        }
        attest = {"fix": fix, "scope": "search", "verdict": "accept", "reasons": []}
        requests += [("fix.propose", propose, 20_000), ("fix.attest", attest, 20_001)]
        made = store.create_ops(ident, requests)
        assert all(isinstance(op, Op) for op in made)
        raws = [op.raw for op in made if isinstance(op, Op)]
    return specs[0].dir, raws, fix


async def test_a_burst_larger_than_every_buffer_drops_slow_listeners_not_the_node(
    flood: tuple[Path, list[bytes], bytes],
) -> None:
    admin_dir, raws, fix = flood
    cfg = NodeConfig(data_dir=admin_dir, sync_interval=60, synchronous="NORMAL")
    async with open_node(cfg, fake=FakeNetwork(seed=1)) as node:
        slow = node.subscribe(buffer=2)
        events = node.fix_events()
        result = node.ingest_raw(raws)  # one ingest applies all of them at once
        assert len(result.applied) == len(raws) and not result.rejected
        # the slow subscriber got what fit, then its channel ended
        got = [await slow.receive(), await slow.receive()]
        assert [op.raw for op in got] == raws[:2]
        with pytest.raises(trio.EndOfChannel):
            await slow.receive()
        # the node still reports the fix's transition and still writes
        with trio.fail_after(10):
            t = await events.receive()
        assert (t.fix, t.new) == (fix, "accepted")
        op = await node.write("pattern.report", sample_report(template="after the flood <*>"))
        assert op.id in node.store.replica.meta
        assert node.fixes.best(sample_report()["pattern"]) is not None  # type: ignore[arg-type]


async def test_listeners_whose_reader_is_gone_are_pruned_when_one_is_added(
    tmp_path: Path,
) -> None:
    """Each GET /v1/events used to leave its channel behind until the next fix
    transition: a client that came and went 2000 times left 2000 channels."""
    spec = prepare(tmp_path, 1, 0)[0]
    cfg = NodeConfig(data_dir=spec.dir, synchronous="NORMAL", learn=False)
    async with open_node(cfg, fake=FakeNetwork(seed=2)) as node:
        for _ in range(2 * MAX_LISTENERS):  # more than the cap: none is refused
            node.fix_events().close()
            node.subscribe().close()
            node.fix_events()  # dropped unclosed: garbage, pruned as well
            node.subscribe()
        assert len(node._fix_listeners) <= 1 and len(node._listeners) <= 1
        kept = node.subscribe(buffer=10)
        op = await node.write("pattern.report", sample_report(template="pruned <*>"))
        assert (await kept.receive()).id == op.id  # the live one still gets ops
        assert len(node._listeners) == 1


async def test_listeners_beyond_the_cap_are_refused_until_one_closes(tmp_path: Path) -> None:
    spec = prepare(tmp_path, 1, 0)[0]
    cfg = NodeConfig(data_dir=spec.dir, synchronous="NORMAL", learn=False)
    async with open_node(cfg, fake=FakeNetwork(seed=3)) as node:
        for listen in (node.fix_events, node.subscribe):
            held: list[trio.MemoryReceiveChannel[Any]] = [listen(1) for _ in range(MAX_LISTENERS)]
            with pytest.raises(TooManyListeners, match="close one"):
                listen(1)
            held.pop().close()
            held.append(listen(1))  # a slot came free
            for chan in held:
                chan.close()


def test_a_listener_set_delivers_to_live_readers_and_drops_slow_and_gone_ones() -> None:
    listeners = Listeners[int]("test listener", limit=3)
    live, slow, gone = listeners.add(10), listeners.add(1), listeners.add(10)
    gone.close()
    listeners.send([1, 2])
    assert len(listeners) == 1
    assert [live.receive_nowait(), live.receive_nowait()] == [1, 2]
    assert slow.receive_nowait() == 1
    with pytest.raises(trio.EndOfChannel):  # dropped when it fell behind: its channel ends
        slow.receive_nowait()


def test_a_clone_read_after_the_original_is_collected_keeps_its_events() -> None:
    """Sharing a channel among readers with clone() is usual in trio: once the
    original was garbage-collected (unclosed), its listener was pruned as gone
    and the clone's reader got EndOfChannel (a review found it)."""
    import gc

    listeners = Listeners[int]("test listener")
    clone = listeners.add(10).clone()
    gc.collect()
    listeners.send([1])
    assert len(listeners) == 1 and clone.receive_nowait() == 1
    clone.close()
    gc.collect()
    listeners.send([2])
    assert len(listeners) == 0  # every reader gone: pruned
