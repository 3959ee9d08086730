"""A benchmark cluster spread over several processes, as nodes are deployed.

:func:`gossipmind.bench.cluster.open_cluster` runs every node in one trio run:
one Python thread, so one core, whatever the machine has. A real deployment runs
one node per machine (or per process). :class:`Fleet` starts ``P`` worker
processes (:mod:`gossipmind.bench.fleet_worker`), each hosting a contiguous
slice of the ``N`` nodes, joins them along the same :func:`ring_edges`, waits for
the gossip mesh and one state root, and then drives writers in every process
with the same back-pressure as the in-process throughput bench: each process
pauses its writers while ``window / P`` of its ops are not yet applied on every
node. The parent only keeps the books: when each op was written, and when the
last of the ``N`` nodes applied it (``time.monotonic``, one clock machine-wide).

Every process the fleet starts is killed and reaped when it exits, whatever happened.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from gossipmind.bench.cluster import (
    MESH_TIMEOUT,
    Edge,
    degree,
    first_leaf,
    mesh_counts_formed,
    ring_edges,
)
from gossipmind.bench.fleet_worker import Pipe
from gossipmind.core.errors import NetworkError
from gossipmind.net.interface import TransportConfig
from gossipmind.testnet.procs import cpu_seconds
from gossipmind.testnet.setup import prepare

START_TIMEOUT = 60.0
EXIT_TIMEOUT = 20.0


def slices(n: int, processes: int) -> list[list[int]]:
    """Node indices ``0..n-1`` in ``processes`` contiguous, near-equal slices."""
    p = max(1, min(processes, n))
    return [list(range(g * n // p, (g + 1) * n // p)) for g in range(p)]


@dataclass
class Books:
    """When each op was written and when the last of ``need`` nodes applied it."""

    need: int
    started: dict[bytes, float] = field(default_factory=dict)
    author: dict[bytes, int] = field(default_factory=dict)
    seen: dict[bytes, list[float]] = field(default_factory=dict)  # [count, latest]
    done: dict[bytes, float] = field(default_factory=dict)
    done_by: dict[int, int] = field(default_factory=dict)
    changed: trio.Event = field(default_factory=trio.Event)
    _done_started: int = 0  # ops both written (reported) and done

    def wrote(self, g: int, oid: bytes, t: float) -> None:
        self.started[oid] = t
        self.author[oid] = g
        if oid in self.done:  # applied everywhere before its writer's report came
            self.done_by[g] = self.done_by.get(g, 0) + 1
            self._done_started += 1

    def applied(self, oid: bytes, count: int, t: float) -> None:
        s = self.seen.setdefault(oid, [0, t])
        s[0] += count
        s[1] = max(s[1], t)
        if s[0] >= self.need:
            del self.seen[oid]
            self.done[oid] = s[1]
            g = self.author.get(oid)
            if g is not None:
                self.done_by[g] = self.done_by.get(g, 0) + 1
                self._done_started += 1

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def outstanding(self) -> int:
        """Ops written and not yet applied on every node."""
        return len(self.started) - self._done_started

    def completed_between(self, t0: float, t1: float) -> list[float]:
        d = self.done
        return [d[k] - t for k, t in self.started.items() if k in d and t0 <= d[k] < t1]


@dataclass
class Member:
    """One worker process and what it last reported."""

    g: int
    indices: list[int]
    proc: trio.Process
    pipe: Pipe
    addrs: dict[int, str] = field(default_factory=dict)
    nodes: dict[int, tuple[int, int, bytes]] = field(default_factory=dict)  # peers, mesh, root
    ticks: int = 0
    stopped: bool = False
    final: dict[str, Any] | None = None


class Fleet:
    def __init__(self, root: Path, n: int, k: int, members: list[Member]) -> None:
        self.root = root
        self.n = n
        self.edges: list[Edge] = ring_edges(n, k)
        self.members = members
        self.books = Books(need=n)

    async def read(self, m: Member) -> None:
        """Consume one worker's frames until it exits."""
        while (msg := await m.pipe.read()) is not None:
            t = msg["t"]
            if t == "addrs":
                m.addrs = {int(i): str(a) for i, a in msg["addrs"]}
            elif t == "tick":
                m.nodes = {int(i): (p, mesh, root) for i, p, mesh, root in msg["nodes"]}
                for oid, at in msg["writes"]:
                    self.books.wrote(m.g, oid, at)
                for oid, count, at in msg["arrivals"]:
                    self.books.applied(oid, count, at)
                m.ticks += 1
            elif t == "stopped":
                m.stopped = True
            elif t == "final":
                m.final = msg
            self.books.notify()
        if m.final is None:
            raise NetworkError(f"bench worker {m.g} exited early: {self.stderr_tail(m)}")

    def stderr_tail(self, m: Member) -> str:
        path = self.root / f"worker-{m.g}.err"
        try:
            lines = path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no stderr)"
        return lines[-1] if lines else "(no stderr)"

    async def wait(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Until ``ready()`` (True) or ``timeout`` seconds passed (False)."""
        with trio.move_on_after(timeout):
            while not ready():
                await self.books.changed.wait()
        return ready()

    async def until(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        if not await self.wait(ready, timeout):
            raise NetworkError(f"bench fleet: {what} not reached within {timeout:.0f} s")

    async def broadcast(self, doc: dict[str, Any]) -> None:
        for m in self.members:
            await m.pipe.write(doc)

    async def form(self) -> None:
        """Dial the edges, then wait for every node's mesh and one root."""
        await self.until(
            "listen addresses", lambda: all(m.addrs for m in self.members), START_TIMEOUT
        )
        addr = {i: a for m in self.members for i, a in m.addrs.items()}
        owner = {i: m for m in self.members for i in m.indices}
        for m in self.members:
            edges = [[a, addr[b]] for a, b in self.edges if owner[a] is m]
            await m.pipe.write({"t": "dial", "edges": edges})
        low = TransportConfig(seed=bytes(32), topic="t").degree_low
        want = degree(self.n, self.edges)

        def ready() -> bool:
            nodes = {i: s for m in self.members for i, s in m.nodes.items()}
            if len(nodes) < self.n:
                return False
            counts = [nodes[i][:2] for i in range(self.n)]
            return mesh_counts_formed(counts, want, low) and len(self.roots()) == 1

        await self.until("gossip mesh and one state root", ready, MESH_TIMEOUT)
        await self.broadcast({"t": "settle"})

    def roots(self) -> set[bytes]:
        """The nodes' state roots as last reported (``b""`` while writers run)."""
        return {s[2] for m in self.members for s in m.nodes.values()}

    async def pace(self) -> None:
        """Tell each worker how many of its ops are applied everywhere (back-pressure)."""
        sent: dict[int, int] = {}
        while True:
            for m in self.members:
                count = self.books.done_by.get(m.g, 0)
                if sent.get(m.g) != count:
                    await m.pipe.write({"t": "done", "count": count})
                    sent[m.g] = count
            await trio.sleep(0.05)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the worker processes (user + system)."""
        return sum(cpu_seconds(m.proc.pid) for m in self.members)


@asynccontextmanager
async def open_fleet(
    root: Path,
    n: int,
    processes: int,
    window: int,
    *,
    k: int = 2,
    verifiers: int = 1,
    **overrides: object,
) -> AsyncIterator[Fleet]:
    """``n`` nodes in ``processes`` worker processes, mesh formed, books kept."""
    prepare(root, n, min(verifiers, n - 1))
    groups = slices(n, processes)
    share = max(1, window // len(groups))
    members: list[Member] = []
    closed = False
    try:
        try:
            async with trio.open_nursery() as nursery:
                for g, indices in enumerate(groups):
                    cmd = [
                        sys.executable, "-m", "gossipmind.bench.fleet_worker",
                        str(root), str(n), str(k), ",".join(map(str, indices)), str(share),
                        json.dumps(overrides),
                    ]  # fmt: skip
                    with open(root / f"worker-{g}.err", "wb") as err:
                        proc = await trio.lowlevel.open_process(
                            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
                        )
                    assert proc.stdin is not None and proc.stdout is not None
                    members.append(Member(g, indices, proc, Pipe(proc.stdout, proc.stdin)))
                fleet = Fleet(root, n, k, members)
                for m in members:
                    nursery.start_soon(fleet.read, m)
                await fleet.form()
                nursery.start_soon(fleet.pace)
                yield fleet
                await fleet.broadcast({"t": "close"})
                await fleet.until(
                    "workers' final reports", lambda: all(m.final for m in members), EXIT_TIMEOUT
                )
                closed = True
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # one failure, not a nursery's group
            if group.subgroup(KeyboardInterrupt) is not None:
                raise KeyboardInterrupt from None  # Ctrl-C: the CLI says "Aborted!"
            leaf = first_leaf(group)
            raise (leaf if isinstance(leaf, Exception) else group) from None
    finally:
        with trio.CancelScope(shield=True):
            await _reap(members, graceful=closed)


async def _reap(members: list[Member], *, graceful: bool) -> None:
    """Wait for each worker to exit (``graceful``: it sent its final report and is
    closing its nodes) or kill it at once; kill the ones still there after
    :data:`EXIT_TIMEOUT`."""
    if graceful:
        with trio.move_on_after(EXIT_TIMEOUT):
            for m in members:
                await m.proc.wait()
    for m in members:
        if m.proc.returncode is None:
            m.proc.kill()
            await m.proc.wait()
