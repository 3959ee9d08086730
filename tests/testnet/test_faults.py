"""Partitions and crashes of node processes over real libp2p (TCP on 127.0.0.1).

One testnet serves the module: four nodes in two processes (``per_process=2``:
node-0+node-1, node-2+node-3), plus spares node-4 and node-5 (in-test writers,
one per half of a partition) and node-6 (a node process SIGKILLed while it
writes, then restarted as a daemon). Teardown calls ``down()`` and checks that
no process survives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from tnkit import (
    connected,
    helper_config,
    holds,
    line,
    one_root,
    recorded,
    teardown,
    until,
    write_many,
)

from gossipmind.node.node import Node, open_node
from gossipmind.testnet import Testnet

pytestmark = pytest.mark.slow

NODES = [f"node-{i}" for i in range(4)]
LEFT, RIGHT = ["node-0", "node-1"], ["node-2", "node-3"]
HELPER_L, HELPER_R, WRITER = "node-4", "node-5", "node-6"
WORKER = Path(__file__).with_name("writer_worker.py")


@pytest.fixture(scope="module")
def net4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testnet]:
    tn = Testnet(tmp_path_factory.mktemp("net4") / "run")
    seen: dict[int, int | None] = {}
    try:
        tn.up(4, 1, per_process=2, spares=3, status_every=0.5, settings={"sync_interval": 1.0})
        seen.update(recorded(tn))
        yield tn
    finally:
        teardown(tn, seen)


async def test_partition_then_heal_converges_to_one_root(net4: Testnet) -> None:
    since = max(line(net4, n)["ts"] for n in NODES)
    net4.partition([[*LEFT, HELPER_L], [*RIGHT, HELPER_R]])
    try:
        async with (
            open_node(helper_config(net4, HELPER_L, via="node-1")) as hl,
            open_node(helper_config(net4, HELPER_R, via="node-3")) as hr,
        ):
            await hl.block(net4.blocked_peers(HELPER_L))
            await hr.block(net4.blocked_peers(HELPER_R))
            # daemons re-read control.json every 0.2 s: a status line logged 1 s
            # after the partition means it is in force
            await until(
                lambda: all(line(net4, n)["ts"] > since + 1.0 for n in NODES), "partition applied"
            )
            await connected(hl)
            await connected(hr)
            ids: dict[str, set[bytes]] = {}

            async def write(node: Node, tag: str) -> None:
                ids[tag] = await write_many(node, tag, 25)

            async with trio.open_nursery() as nursery:  # the two halves write concurrently
                nursery.start_soon(write, hl, "left")
                nursery.start_soon(write, hr, "right")
            await until(
                lambda: holds(net4, LEFT, ids["left"]) and one_root(net4, LEFT, hl), "left merged"
            )
            await until(
                lambda: holds(net4, RIGHT, ids["right"]) and one_root(net4, RIGHT, hr),
                "right merged",
            )
            assert net4.roots(LEFT)["node-0"] != net4.roots(RIGHT)["node-2"]
            assert not ids["right"] & net4.op_ids("node-0"), "an op crossed the partition"
            assert not ids["left"] & net4.op_ids("node-3"), "an op crossed the partition"
            rows = {r["name"]: r for r in net4.status()}
            assert rows["node-0"]["group"] == 0 and rows["node-3"]["group"] == 1
            net4.heal()
            await hl.block(set())
            await hr.block(set())
            everything = ids["left"] | ids["right"]
            await until(
                lambda: holds(net4, NODES, everything) and one_root(net4, NODES, hl, hr),
                "one root after healing",
                timeout=60,
            )
    finally:
        net4.heal()
    assert all(r["converged"] for r in net4.status() if r["name"] in NODES)


def _acks(path: Path) -> set[bytes]:
    out = set()
    for raw in path.read_bytes().splitlines():
        try:
            doc = json.loads(raw)
        except ValueError:
            continue  # a line cut by SIGKILL
        if doc.get("event") == "acked":
            out.add(bytes.fromhex(doc["id"]))
    return out


async def test_sigkill_and_restart_lose_nothing_acknowledged(net4: Testnet, tmp_path: Path) -> None:
    # a node process (node-6) writes and acknowledges ops; SIGKILL it mid-stream
    out, err = tmp_path / "writer.out", tmp_path / "writer.err"
    cmd = [sys.executable, str(WORKER), net4.node(WRITER).dir, "400", f"acked {os.getpid()}"]
    with out.open("wb") as fo, err.open("wb") as fe:
        writer = subprocess.Popen(
            [*cmd, net4.node("node-1").addr], stdout=fo, stderr=fe, stdin=subprocess.DEVNULL
        )
    try:
        await until(lambda: len(_acks(out)) >= 40, "the writer acknowledged 40 ops", 60)
        killed = await trio.to_thread.run_sync(net4.kill, "node-3")  # a daemon process, meanwhile
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait(timeout=10) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
    acked = _acks(out)
    assert 40 <= len(acked) < 400, "killed while writing"
    assert acked <= net4.op_ids(WRITER), "an acknowledged op is missing from its own store"
    assert killed["siblings"] == ["node-2"], "per_process=2: node-2 shared the process"
    assert not net4.running("node-3") and not net4.running("node-2")

    # the rest of the network moves on while node-2, node-3 and node-6 are down
    async with open_node(helper_config(net4, HELPER_L, via="node-0")) as helper:
        await connected(helper)
        missed = await write_many(helper, "while-down", 30)
        await until(lambda: holds(net4, LEFT, missed), "node-0 and node-1 got the new ops")
    assert not missed & net4.op_ids("node-3")

    restarted = await trio.to_thread.run_sync(net4.restart, "node-3")
    assert restarted["pid"] != killed["pid"] and restarted["siblings"] == ["node-2"]
    await trio.to_thread.run_sync(net4.start, WRITER)  # the killed writer, now as a daemon
    everyone = [*NODES, WRITER]
    await until(
        lambda: holds(net4, everyone, acked | missed) and one_root(net4, everyone),
        "node-2, node-3 and the writer caught up; acknowledged ops are everywhere",
        timeout=60,
    )
    rows = {r["name"]: r for r in net4.status()}
    assert all(rows[n]["state"] == "running" and rows[n]["converged"] for n in everyone)
