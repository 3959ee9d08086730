"""Helpers for the testnet tests (imported as ``tnkit``): bounded waits, checked teardown."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node
from gossipmind.testing import sample_report
from gossipmind.testnet import Testnet, peer_id_of, prepare
from gossipmind.testnet.procs import free_ports, starttime
from gossipmind.testnet.state import NodeEntry, State, save_state


def stopped_testnet(root: Path, nodes: int = 4, spares: int = 1) -> Testnet:
    """A testnet under ``root/run`` as `up` records it, but with no process ever started."""
    run = root / "run"
    specs = prepare(run, nodes, 1, spares=spares)
    ports = free_ports(len(specs))
    state = State(run_dir=str(run), network="00" * 32, per_process=2, status_every=1.0)
    for spec, port in zip(specs, ports, strict=True):
        state.nodes.append(
            NodeEntry(
                spec.name,
                str(spec.dir),
                spec.key.hex(),
                peer_id_of(spec.key),
                spec.role,
                port,
                spare=spec.spare,
            )
        )
    save_state(run, state)
    return Testnet(run)


def recorded(tn: Testnet) -> dict[int, int | None]:
    """pid → start time of every process the state file records."""
    if not tn.exists():
        return {}
    return {p.pid: p.starttime for p in tn.state().procs.values() if p.pid is not None}


def same_process_runs(pid: int, started: int | None) -> bool:
    """True if the process ``pid`` (started at ``started``) still runs (zombies do not)."""
    now = starttime(pid)
    return now is not None and (started is None or now == started)


def teardown(tn: Testnet, seen: dict[int, int | None]) -> None:
    """``down()``, then prove that no process the testnet ever started survives."""
    seen.update(recorded(tn))
    if tn.exists():
        tn.down(timeout=10)
    survivors = [p for p, t in seen.items() if same_process_runs(p, t)]
    assert not survivors, f"node processes survived down(): {survivors}"


async def until(cond: Callable[[], bool], what: str, timeout: float = 45.0) -> None:
    """Poll ``cond`` every 0.1 s (trio-friendly) until true; fail after ``timeout``."""
    for _ in range(int(timeout / 0.1) + 1):
        if cond():
            return
        await trio.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def report(tag: str, i: int = 0) -> dict[str, object]:
    """A pattern report of a pattern nobody else reports (no synthesis is triggered)."""
    return sample_report(template=f"{tag} {os.getpid()} {i} failed after <*> ms")


# -- in-test nodes and checks over a running testnet ----------------------------------


def helper_config(tn: Testnet, name: str, via: str) -> NodeConfig:
    """Run spare ``name`` in the test process, joined through ``via`` only.

    ``min_peers=1``: the helper makes one connection and does not go on dialing
    (a py-libp2p host accepts only 12 inbound connections in its life, see
    test_known_issues.py, so the tests spend them sparingly).
    """
    return replace(tn.config(name), min_peers=1, bootstrap=(tn.node(via).addr,))


def line(tn: Testnet, name: str) -> dict[str, Any]:
    """The node's latest status (or ready) line; {} if none."""
    return tn.latest(name) or {}


def one_root(tn: Testnet, names: list[str], *helpers: Node) -> bool:
    roots = set(tn.roots(names).values()) | {h.store.replica.root().hex() for h in helpers}
    return len(roots) == 1 and None not in roots


def holds(tn: Testnet, names: list[str], ids: set[bytes]) -> bool:
    return all(ids <= tn.op_ids(n) for n in names)


async def write_many(node: Node, tag: str, n: int) -> set[bytes]:
    ids = set()
    for i in range(n):
        op = await node.write("pattern.report", report(tag, i))
        ids.add(op.id)
        await trio.sleep(0)
    return ids


async def connected(node: Node) -> None:
    await until(lambda: bool(node.transport.peers()), "the in-test node has a peer")
