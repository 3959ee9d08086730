"""Five node processes over real libp2p (TCP on 127.0.0.1), driven through the launcher.

One testnet serves the module: five daemons, one per process, and two spare data
dirs: node-5 runs in the test process as a writer, node-6 is the late joiner.
Teardown calls ``down()`` and checks that no process survives.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from tnkit import (
    connected,
    helper_config,
    holds,
    line,
    one_root,
    recorded,
    report,
    teardown,
    until,
    write_many,
)

from gossipmind.core import ops as opsmod
from gossipmind.core.identity import Identity
from gossipmind.net import TransportConfig, encode_batch
from gossipmind.node.node import open_node
from gossipmind.store.queries import Reader
from gossipmind.testnet import Testnet

pytestmark = pytest.mark.slow

NODES = [f"node-{i}" for i in range(5)]
HELPER, LATE = "node-5", "node-6"


@pytest.fixture(scope="module")
def net5(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testnet]:
    tn = Testnet(tmp_path_factory.mktemp("net5") / "run")
    seen: dict[int, int | None] = {}
    try:
        tn.up(5, 1, spares=2, status_every=0.5, settings={"sync_interval": 1.0})
        seen.update(recorded(tn))
        yield tn
    finally:
        teardown(tn, seen)


async def test_an_op_written_on_one_node_is_applied_on_all_five(net5: Testnet) -> None:
    rows = {r["name"]: r for r in net5.status()}
    assert len({rows[n]["pid"] for n in NODES}) == 5, "five node processes"
    async with open_node(helper_config(net5, HELPER, via="node-3")) as helper:
        await connected(helper)
        op = await helper.write("pattern.report", report("one"))
        await until(lambda: holds(net5, NODES, {op.id}), "the op is applied on all five")
        await until(lambda: one_root(net5, NODES, helper), "one state root")
    rows = {r["name"]: r for r in net5.status()}
    assert all(rows[n]["state"] == "running" and rows[n]["converged"] for n in NODES)
    assert len({rows[n]["root"] for n in NODES}) == 1


async def test_late_joiner_reaches_the_same_root_through_sync_alone(net5: Testnet) -> None:
    before = net5.store_info(LATE)
    assert before is not None and before[0] < 20  # genesis and grants only
    async with open_node(helper_config(net5, HELPER, via="node-2")) as helper:
        await connected(helper)
        ids = await write_many(helper, "before-join", 500)
        await until(lambda: holds(net5, NODES, ids), "500 ops on every node", timeout=90)
        await until(lambda: one_root(net5, NODES, helper), "one root before the join")
    # gossipsub offers recent messages for 3 heartbeats (3 s): wait past that, so
    # the joiner can only get the 500 ops by anti-entropy sync
    await trio.sleep(4)
    await trio.to_thread.run_sync(net5.start, LATE)
    await until(
        lambda: holds(net5, [LATE], ids) and one_root(net5, [*NODES, LATE]),
        "the late joiner reached the same root",
        timeout=60,
    )
    info = net5.store_info(LATE)
    assert info is not None
    await until(lambda: line(net5, LATE).get("ops") == info[0], "a caught-up status line")
    assert line(net5, LATE)["gossip_messages"] == 0, "the late joiner got ops by gossip"


def _junk(net: bytes) -> dict[str, bytes]:
    """A gossip message per kind of junk, keyed by the reason the validator gives."""
    author = Identity(os.urandom(32))
    fields: dict[str, Any] = {"kind": "pattern.report", "seq": 1, "lamport": 1, "deps": []}
    good = opsmod.create(author, net=net, ts=1, body=report("junk"), **fields)
    bad_sig = bytearray(good.raw)
    bad_sig[-1] ^= 0x01  # the signature is the envelope's last field
    other_net = opsmod.create(author, net=os.urandom(32), ts=1, body=report("junk"), **fields)
    return {
        "signature": encode_batch([bytes(bad_sig)]),
        "wrong_network": encode_batch([other_net.raw]),
        "encoding": b"\xc1garbage\x00\xff" * 8,
    }


def _rejected_in_store(tn: Testnet, name: str) -> int:
    with Reader(Path(tn.node(name).dir) / "kb.sqlite3") as r:
        return int(r.status()["rejected"])


async def test_junk_from_a_hostile_peer_changes_nothing_and_goes_nowhere(net5: Testnet) -> None:
    from gossipmind.net.host import open_libp2p_transport

    st = net5.state()
    target = st.node("node-1")
    others = [n for n in NODES if n != target.name]
    roots = net5.roots(NODES)
    rejected = {n: _rejected_in_store(net5, n) for n in NODES}
    baseline = {n: dict(line(net5, n).get("gossip_rejected", {})) for n in NODES}
    junk = _junk(bytes.fromhex(st.network))
    # a libp2p peer whose validator accepts everything, on the network's topic;
    # max_connections=1: nobody but the target can connect to it
    config = TransportConfig(
        seed=os.urandom(32), topic=f"gossipmind/{st.network}/ops/1", max_connections=1
    )

    def seen_by_target() -> set[str]:
        return set(line(net5, target.name).get("gossip_rejected", {}))

    async with open_libp2p_transport(config, lambda _data: True) as hostile:
        await hostile.connect(target.addr)
        for _ in range(80):  # until the target has rejected each kind at least once
            if set(junk) <= seen_by_target():
                break
            if target.peer_id not in hostile.peers():
                await hostile.connect(target.addr)
            for data in junk.values():
                await hostile.publish(data)
            await trio.sleep(0.25)
        assert set(junk) <= seen_by_target(), seen_by_target()
        await trio.sleep(1.6)  # three more status intervals: anything forwarded would show
        assert hostile.peers() == [target.peer_id]
    assert net5.roots(NODES) == roots, "junk changed a state root"
    assert {n: _rejected_in_store(net5, n) for n in NODES} == rejected, "junk reached a store"
    for n in others:
        assert line(net5, n).get("gossip_rejected", {}) == baseline[n], f"{n} received junk"
