"""A sync frame is applied in steps, and the event loop runs between them
(``Node.ingest_frame``, docs/sync.md).

A late joiner's sync brings frames of up to 512 KiB (~1 200 ops). Ingesting one
in a single call held the node's event loop for 0.1 to 0.25 s each (gossip, the
API, heartbeats waiting), 34 % of it blocked on signature checks running on
other threads. A frame now goes in steps of ``INGEST_STEP`` ops, each durable
before the next; the loop awaits signatures and turns between steps.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from test_sync_link_drop import authored, session_with

from gossipmind.core.replica import IngestResult
from gossipmind.node import node as nodemod
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import open_node
from gossipmind.node.syncer import SyncCounters, drive
from gossipmind.store.datadir import DataDir
from gossipmind.store.sqlite import Staged, Store
from gossipmind.store.verifier import Verification
from gossipmind.sync import messages
from gossipmind.sync.messages import Ops
from gossipmind.sync.session import Stats, Step
from gossipmind.testnet.setup import prepare

N = 900


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """A two-member network and N ops of the second member, in causal order."""
    root = tmp_path_factory.mktemp("steps")
    specs = prepare(root, 2, 0)
    return specs[0].dir, authored(specs[1].dir, N)


def config(data_dir: Path) -> NodeConfig:
    return NodeConfig(data_dir=data_dir, synchronous="NORMAL", learn=False, sync_interval=600.0)


async def test_a_frame_from_a_real_peer_is_applied_in_steps_with_the_loop_turning_between(
    network: tuple[Path, list[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pristine, raws = network
    data_dir = tmp_path / "node"
    prepare_copy(pristine, data_dir)
    ticks = 0  # task steps run by the loop, any task's
    at_step: list[tuple[int, int, int]] = []  # (ticks, ops in the step, ops held before it)

    class Steps(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            nonlocal ticks
            ticks += 1

    apply_staged = Store.apply_staged

    def recording(store: Store, staged: Staged) -> object:
        at_step.append((ticks, len(staged[0]), len(store.replica.meta)))
        return apply_staged(store, staged)

    monkeypatch.setattr(Store, "apply_staged", recording)

    with trio.fail_after(120):
        async with open_node(config(data_dir)) as node:
            trio.lowlevel.add_instrument(Steps())
            held = len(node.store.replica.meta)
            async with session_with(node) as (_peer, stream):
                frame = messages.encode(Ops(raws))
                assert len(frame) <= messages.MAX_OPS_FRAME
                await stream.send(frame)
                while len(node.store.replica.meta) < held + N:
                    await trio.sleep(0.01)
                await stream.reset()
            assert node.counters.ops_applied == N
    steps = -(-N // nodemod.INGEST_STEP)
    assert [n for _, n, _ in at_step] == [nodemod.INGEST_STEP] * (steps - 1) + [
        N - nodemod.INGEST_STEP * (steps - 1)
    ]
    # each step was applied after the one before it (durable in between) ...
    assert [h for _, _, h in at_step] == [held + nodemod.INGEST_STEP * k for k in range(steps)]
    # ... each in a task step of its own: the loop turned (every runnable task ran
    # once) between every two
    assert all(b > a for (a, _, _), (b, _, _) in itertools.pairwise(at_step))
    with Store.open(DataDir(data_dir).store) as store:  # every op is in the file
        assert len(store.replica.meta) == held + N


async def test_ops_that_arrive_by_another_path_during_a_frame_are_applied_once(
    network: tuple[Path, list[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a step waits for its signatures (on a worker thread here), gossip
    applies ops of the later steps: they count as duplicates, once, and every op
    of the frame is applied and counted exactly once."""
    data_dir, raws = network
    copy = tmp_path / "node"
    prepare_copy(data_dir, copy)
    monkeypatch.setattr(Verification, "ready", lambda _self: False)  # always wait off the loop
    with trio.fail_after(120):
        async with open_node(config(copy)) as node:
            held = len(node.store.replica.meta)
            started = trio.Event()
            apply_staged = node.store.apply_staged

            def first_applies(staged: Staged) -> object:
                started.set()
                return apply_staged(staged)

            monkeypatch.setattr(node.store, "apply_staged", first_applies)
            others = raws[nodemod.INGEST_STEP : N - 100]
            async with trio.open_nursery() as nursery:

                async def meanwhile() -> None:
                    await started.wait()
                    node.ingest_raw(others)

                nursery.start_soon(meanwhile)
                result = await node.ingest_frame(list(raws))
            assert len(result.applied) + result.duplicates == N
            assert result.duplicates == len(others)
            assert len(node.store.replica.meta) == held + N
            assert node.counters.ops_applied == N


def prepare_copy(src: Path, dst: Path) -> None:
    """A copy of a node's data dir (its store closed)."""
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock", "api.*"))


async def test_the_session_deadline_never_lands_between_the_steps_of_a_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A slow catch-up that brings new ops at MIN_PROGRESS_RATE or more ends as
    ``overran`` (not penalized) even when its deadline falls inside a stepped
    frame: the frame is applied whole and counted (found by a review: counted
    without its applied steps, it was ``deadline``, penalized). A stepped
    ingest of 5 steps of 1.1 s (virtual clock), 200 KB frames, a 10 s limit."""
    raws = [bytes([i % 256, i // 256]) * 100 for i in range(1000)]

    class FrameStream:
        remote_peer = "peer"
        protocol = messages.PROTOCOL

        async def receive(self) -> bytes:
            return messages.encode(Ops(raws))

        async def send(self, frame: bytes) -> None:
            pass

        async def reset(self) -> None:
            pass

        async def close(self) -> None:
            pass

    class Applied:
        def __init__(self, raw: bytes) -> None:
            self.raw = raw

    async def stepped(frame: list[bytes]) -> IngestResult:
        out = IngestResult()
        for i in range(0, len(frame), 200):
            await trio.sleep(1.1)  # signatures, other tasks, between steps
            out.applied += [Applied(r) for r in frame[i : i + 200]]  # type: ignore[misc]
        return out

    class EndlessSession:  # what drive() reads of a session that keeps receiving ops
        done = completed = False
        declined = ""
        stats = Stats()

        def start(self) -> Iterator[object]:
            return iter(())

        def receive(self, msg: Ops) -> Step:
            return Step(ops=list(msg.ops))

    why = await drive(
        FrameStream(),  # type: ignore[arg-type]
        EndlessSession(),  # type: ignore[arg-type]
        stepped,
        SyncCounters(),
        timeout=5,
        limit=10.0,
    )
    assert why == "overran"
