"""One process of a multi-process benchmark cluster (see :mod:`gossipmind.bench.fleet`).

``python -m gossipmind.bench.fleet_worker ROOT N K INDICES WINDOW OVERRIDES``
hosts the nodes ``INDICES`` (comma-separated) of an ``N``-node cluster whose data
dirs :func:`~gossipmind.testnet.setup.prepare` made under ``ROOT`` (``OVERRIDES``:
:class:`~gossipmind.node.config.NodeConfig` fields as a JSON object; ``WINDOW``:
its writers' share of the ops in flight). It is driven by
its parent over stdin/stdout with length-prefixed msgpack frames (:class:`Pipe`):

* worker → parent: ``addrs`` (its nodes' listen addresses), then a ``tick``
  every :data:`TICK` seconds (each node's peers, mesh and state root — the root
  only while the writers are not running; the ops written and the ops applied
  since the last tick, with times), ``stopped`` after the
  writers stop, ``final`` (counters and a sample of written ops) before it exits;
* parent → worker: ``dial`` (edges to open), ``settle``, ``write`` (start the
  writers), ``done`` (how many of this worker's ops are applied on every node:
  the writers' back-pressure), ``stop``, ``close``.

Times are ``time.monotonic()``, one clock for every process of the machine.
Anything printed to stdout by a library goes to stderr: stdout carries frames only.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import msgpack
import trio

from gossipmind.bench.cluster import node_config
from gossipmind.core.errors import NetworkError
from gossipmind.core.ops import Op
from gossipmind.net.mesh import mesh_peers
from gossipmind.node.heap import settle_heap
from gossipmind.node.node import Node, open_node
from gossipmind.testing import sample_report

TICK = 0.1
MAX_FRAME = 64 * 1024 * 1024
SAMPLE = 3000
_LEN = struct.Struct(">I")


class Pipe:
    """Length-prefixed msgpack frames over a pair of trio byte streams."""

    def __init__(self, recv: trio.abc.ReceiveStream, send: trio.abc.SendStream) -> None:
        self._recv = recv
        self._send = send
        self._buf = bytearray()
        self._lock = trio.Lock()

    async def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            chunk = await self._recv.receive_some(1 << 16)
            if not chunk:
                return False
            self._buf += chunk
        return True

    async def read(self) -> dict[str, Any] | None:
        """The next frame, or None at end of stream."""
        if not await self._fill(_LEN.size):
            return None
        (size,) = _LEN.unpack_from(self._buf)
        if size > MAX_FRAME:
            raise NetworkError(f"bench frame of {size} bytes (max {MAX_FRAME})")
        if not await self._fill(_LEN.size + size):
            raise NetworkError("bench pipe closed mid-frame")
        body = bytes(self._buf[_LEN.size : _LEN.size + size])
        del self._buf[: _LEN.size + size]
        doc = msgpack.unpackb(body, raw=False)
        if not isinstance(doc, dict):
            raise NetworkError("bench frame is not a map")
        return doc

    async def write(self, doc: dict[str, Any]) -> None:
        body = msgpack.packb(doc, use_bin_type=True)
        async with self._lock:
            await self._send.send_all(_LEN.pack(len(body)) + body)


class Worker:
    """This process's nodes, writers and reports."""

    def __init__(self, nodes: dict[int, Node], pipe: Pipe, window: int, offset: int) -> None:
        self.nodes = nodes
        self.pipe = pipe
        self.window = window
        self.written = 0
        self.done = 0
        self.writing = False
        self.changed = trio.Event()
        self.sample: list[bytes] = []
        self._counter = itertools.count(offset)
        self._writes: list[tuple[bytes, float]] = []
        self._arrivals: dict[bytes, list[float]] = {}  # op id -> [count, latest time]

    async def watch(self, recv: trio.MemoryReceiveChannel[Op]) -> None:
        async with recv:
            async for op in recv:
                now = time.monotonic()
                seen = self._arrivals.get(op.id)
                if seen is None:
                    self._arrivals[op.id] = [1, now]
                else:
                    seen[0] += 1
                    seen[1] = now

    async def writer(self, node: Node) -> None:
        while True:
            while self.written - self.done >= self.window:
                await self.changed.wait()
            k = next(self._counter)
            body = sample_report(template=f"bench throughput {k % 997} <*>", count=1 + k % 7)
            t0 = time.monotonic()
            op = await node.write("pattern.report", body)
            self._writes.append((op.id, t0))
            self.written += 1
            if len(self.sample) < SAMPLE:
                self.sample.append(op.raw)
            await trio.lowlevel.checkpoint()

    def set_done(self, count: int) -> None:
        self.done = count
        self.changed.set()
        self.changed = trio.Event()

    def tick(self) -> dict[str, Any]:
        nodes = []
        for i, node in self.nodes.items():
            peers = set(node.transport.peers())
            mesh = set(mesh_peers(node.transport)) & peers
            # the state root costs a walk of the state: not while the writers measure
            root = b"" if self.writing else node.store.replica.root()
            nodes.append([i, len(peers), len(mesh), root])
        writes, self._writes = self._writes, []
        arrivals, self._arrivals = self._arrivals, {}
        return {
            "t": "tick",
            "nodes": nodes,
            "writes": [[oid, t] for oid, t in writes],
            "arrivals": [[oid, int(c), t] for oid, (c, t) in arrivals.items()],
        }

    async def report(self) -> None:
        while True:
            await self.pipe.write(self.tick())
            await trio.sleep(TICK)

    def final(self) -> dict[str, Any]:
        stats = [node.status() for node in self.nodes.values()]
        return {
            "t": "final",
            "gossip_messages": sum(s["counters"]["gossip_messages"] for s in stats),
            "gossip_ops": sum(s["counters"]["gossip_ops"] for s in stats),
            "sync_ops_received": sum(s["sync"]["ops_received"] for s in stats),
            "sample": self.sample,
        }


async def serve(
    root: Path, n: int, k: int, mine: list[int], window: int, overrides: dict[str, Any], pipe: Pipe
) -> None:
    async with AsyncExitStack() as stack:
        nodes: dict[int, Node] = {}
        for i in mine:
            cfg = node_config(root / f"node-{i}", min_peers=min(2 * k, n - 1), **overrides)
            nodes[i] = await stack.enter_async_context(open_node(cfg))
        await pipe.write(
            {"t": "addrs", "addrs": [[i, nd.transport.addrs()[0]] for i, nd in nodes.items()]}
        )
        worker = Worker(nodes, pipe, window, offset=mine[0] * 10**7)
        async with trio.open_nursery() as nursery:
            for node in nodes.values():
                nursery.start_soon(worker.watch, node.subscribe(buffer=10**7))
            nursery.start_soon(worker.report)
            writers = trio.CancelScope()
            while (msg := await pipe.read()) is not None and msg["t"] != "close":
                if msg["t"] == "dial":
                    for a, addr in msg["edges"]:
                        await nodes[a].transport.connect(addr)
                elif msg["t"] == "settle":
                    settle_heap()
                elif msg["t"] == "write":
                    worker.writing = True
                    nursery.start_soon(_write_all, worker, writers)
                elif msg["t"] == "done":
                    worker.set_done(msg["count"])
                elif msg["t"] == "stop":
                    writers.cancel()
                    worker.writing = False
                    await trio.sleep(0)
                    await pipe.write(worker.tick())
                    await pipe.write({"t": "stopped", "written": worker.written})
            writers.cancel()
            await pipe.write(worker.final())
            nursery.cancel_scope.cancel()


async def _write_all(worker: Worker, scope: trio.CancelScope) -> None:
    with scope:
        async with trio.open_nursery() as nursery:
            for node in worker.nodes.values():
                nursery.start_soon(worker.writer, node)


async def _main(
    root: Path, n: int, k: int, mine: list[int], window: int, overrides: dict[str, Any]
) -> None:
    recv = trio.lowlevel.FdStream(os.dup(0))
    send = trio.lowlevel.FdStream(_frames_fd())
    await serve(root, n, k, mine, window, overrides, Pipe(recv, send))


def _frames_fd() -> int:
    """A duplicate of stdout for frames; fd 1 itself then points at stderr."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    return fd


def main(argv: list[str]) -> None:
    root, n, k, indices, window, overrides = argv
    mine = [int(x) for x in indices.split(",")]
    trio.run(_main, Path(root), int(n), int(k), mine, int(window), json.loads(overrides))


if __name__ == "__main__":
    main(sys.argv[1:])
