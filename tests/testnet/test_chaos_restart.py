"""`testnet chaos` tries a failed restart again, with a longer wait, until it works.

Before: ``_restart`` called ``Testnet.start(name, timeout=15)`` once; when the node
was not ready in time (a large store to open: ``start`` then stops the process)
it logged "restart … failed" and dropped it, so the node stayed down for the rest
of the run (17 minutes in a soak), and the lift tried once more with the same
15 s and gave up.

Most tests drive the schedule against an in-memory testnet on a fake clock (no
processes, no waiting): its nodes need ``startup`` s to get ready, and ``start``
behaves as the real one does when they are not ready in time. The last one is a
short check with real (fake-node) processes.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from gossipmind.core.errors import ConfigError, NetworkError
from gossipmind.testnet import Testnet, procs
from gossipmind.testnet import chaos as chaos_mod
from gossipmind.testnet.chaos import Chaos
from gossipmind.testnet.state import NodeEntry, ProcEntry, State

FAKE = Path(__file__).with_name("fake_node.py")


class Clock:
    """Stands for the ``time`` module in chaos.py: sleeping advances it at once."""

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


class MemoryTestnet:
    """What Chaos uses of a Testnet, in memory, one node per process.

    A process needs ``startup[proc]`` s to get ready. ``start`` waits for it on
    the clock up to its ``timeout``; not ready by then, the process is stopped
    and NetworkError raised, as ``Testnet.start`` does.
    """

    def __init__(self, clock: Clock, nodes: int = 6) -> None:
        self.clock = clock
        self.st = State(run_dir="/nowhere", network="00" * 32, per_process=1, status_every=1.0)
        for i in range(nodes):
            name, key = f"node-{i}", f"p{i}"
            entry = NodeEntry(name, f"/nowhere/{name}", "00" * 32, f"peer{i}", "member", 4000 + i)
            entry.proc = key
            self.st.nodes.append(entry)
            self.st.procs[key] = ProcEntry(id=key, nodes=[name], pid=10_000 + i)
        self.up = set(self.st.procs)
        self.startup = dict.fromkeys(self.st.procs, 0.5)
        self.starts: list[tuple[str, float, bool]] = []  # (process, timeout, ready in time)
        self.most_down = 0

    def state(self) -> State:
        return self.st

    def alive(self, proc: ProcEntry | None) -> bool:
        return proc is not None and proc.id in self.up

    def kill(self, ref: str) -> dict[str, Any]:
        key = str(self.st.node(ref).proc)
        if key not in self.up:
            raise ConfigError(f"{ref} is not running")
        self.up.discard(key)
        self.most_down = max(self.most_down, len(self.st.procs) - len(self.up))
        return {"node": ref, "process": key, "pid": 1, "siblings": []}

    def start(self, ref: str, *, timeout: float | None = None) -> dict[str, Any]:
        key = str(self.st.node(ref).proc)
        if key in self.up:
            raise ConfigError(f"{ref} is already running")
        assert timeout is not None and timeout > 0, timeout
        ready = self.startup[key] <= timeout
        self.starts.append((key, timeout, ready))
        self.clock.sleep(min(self.startup[key], timeout))
        if not ready:
            raise NetworkError(f"not ready in time: {ref}")
        self.up.add(key)
        return {"node": ref, "process": key, "pid": 1, "siblings": [], "unconnected": []}

    def partition(self, groups: Any) -> None:
        pass

    def heal(self, *, links: bool = True) -> None:
        pass

    def link_faults(self, refs: Any, drop: float = 0.0, delay_s: float = 0.0) -> None:
        pass

    def roots(self, refs: Any) -> dict[str, str | None]:
        return {n: "ab" if self.running(n) else None for n in refs}

    def op_ids(self, ref: str) -> set[bytes]:
        return set()

    def running(self, ref: str) -> bool:
        return self.st.node(ref).proc in self.up


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(chaos_mod, "time", fake)
    return fake


def actions_of(chaos: Chaos) -> list[str]:
    return [a for _, a in chaos.result.actions]


def test_a_restart_not_ready_in_time_is_tried_again_with_a_longer_wait(clock: Clock) -> None:
    """Every node needs 20 s to open its store: each first attempt (15 s) fails, the
    process stays down, and the second (30 s), 2 s later, brings it back."""
    tn = MemoryTestnet(clock)
    tn.startup = dict.fromkeys(tn.startup, 20.0)
    chaos = Chaos(cast(Testnet, tn), duration=300, seed=5, writers=0)
    res = chaos.run(converge_timeout=5)
    actions = actions_of(chaos)
    killed = [m.group(1) for a in actions if (m := re.fullmatch(r"SIGKILL (node-\d)", a))]
    assert res.kills >= 2 and len(killed) == res.kills, actions
    for name in killed:
        key = tn.st.node(name).proc
        failed = f"restart {name} failed (attempt 1, waited ≤ 15s): not ready in time: {name}"
        assert any(a.startswith(failed) and a.endswith("retry in 2s") for a in actions), actions
        assert f"restart {name} on attempt 2" in actions, actions
        tries = [(t, ok) for k, t, ok in tn.starts if k == key]
        assert tries[:2] == [(15.0, False), (30.0, True)], tries
    assert res.unlifted == [] and res.ok, res.summary()
    assert actions[-1] == "all faults lifted", actions
    assert tn.up == set(tn.st.procs), "a killed node stayed down"
    assert chaos.down == {}


def test_a_node_that_keeps_failing_stays_down_and_counts_against_the_kills(
    clock: Clock,
) -> None:
    """node-0, killed, never gets ready again: the schedule keeps it in its down set,
    tries it again and again with waits doubling up to 120 s, at most 30 s apart,
    and counts it among the third of the nodes that may be down at once."""
    tn = MemoryTestnet(clock)
    chaos = Chaos(cast(Testnet, tn), duration=400, seed=5, writers=0)
    tn.kill("node-0")
    chaos.down["p0"] = chaos_mod.Down(["node-0"], chaos.now() + 3)
    tn.startup["p0"] = math.inf
    res = chaos.run(converge_timeout=5)
    actions = actions_of(chaos)
    tries = [t for k, t, _ in tn.starts if k == "p0"]
    assert tries[:5] == [15.0, 30.0, 60.0, 120.0, 120.0], tries
    assert len(tries) <= 20, tries  # bounded: the run's 400 s, then the lift's 180 s
    retries = [a for a in actions if a.startswith("restart node-0 failed (attempt ")]
    assert len(retries) == len(tries) >= 6, retries
    assert [r.rsplit(" ", 1)[1] for r in retries[:6]] == ["2s", "4s", "8s", "16s", "30s", "30s"]
    assert res.unlifted == [f"node-0 still down ({len(tries)} attempts): not ready in time: node-0"]
    assert not res.ok
    assert res.kills >= 1, actions  # others were killed, and came back
    assert tn.most_down <= 2, actions  # a third of six, node-0 included
    assert tn.up == set(tn.st.procs) - {"p0"}


def test_the_lift_tries_again_within_its_time_and_reports_what_stays_down(clock: Clock) -> None:
    """Ended at once: the lift restarts node-1 (50 s to open: third attempt, 60 s)
    and node-2 (never ready), and gives up on node-2 after LIFT_TIMEOUT s in all,
    saying so in ``unlifted``. Before: one attempt each, 15 s, both left down."""
    tn = MemoryTestnet(clock)
    chaos = Chaos(cast(Testnet, tn), duration=0, seed=1, writers=0)
    for name in ("node-1", "node-2"):
        tn.kill(name)
    tn.startup.update(p1=50.0, p2=math.inf)
    res = chaos.run(converge_timeout=1)
    actions = actions_of(chaos)
    assert "restart node-1 on attempt 3" in actions, actions
    assert tn.up == set(tn.st.procs) - {"p2"}
    assert [t for k, t, _ in tn.starts if k == "p1"] == [15.0, 30.0, 60.0]
    p2 = [t for k, t, _ in tn.starts if k == "p2"]
    assert p2[:2] == [15.0, 30.0] and len(p2) >= 3, p2  # the last one: what time was left
    lifted_at = res.actions[-1][0]  # the lift's verdict; the run itself took no time
    assert sum(p2) < lifted_at <= chaos_mod.LIFT_TIMEOUT, (lifted_at, p2)
    assert len(res.unlifted) == 1, res.unlifted
    assert res.unlifted[0].startswith(f"node-2 still down ({len(p2)} attempts): not ready in time")
    assert actions[-1].startswith("NOT every fault lifted: node-2 still down"), actions
    assert not res.ok


def test_a_process_started_by_hand_meanwhile_counts_as_up(clock: Clock) -> None:
    """`testnet start node-3` while node-3 waits for its restart: chaos's own start
    is refused (already running) and the node counts as back, not as a failure."""
    tn = MemoryTestnet(clock)
    chaos = Chaos(cast(Testnet, tn), duration=1, seed=1, writers=0)
    tn.kill("node-3")
    chaos.down["p3"] = chaos_mod.Down(["node-3"], chaos.now())
    tn.up.add("p3")  # started by hand
    res = chaos.run(converge_timeout=1)
    assert res.unlifted == [] and chaos.down == {}, res.summary()
    assert not [a for a in actions_of(chaos) if "failed" in a], actions_of(chaos)


SLOW_START = (
    "import runpy, sys, time; time.sleep(float(sys.argv[2])); "
    "sys.argv = [sys.argv[1], *sys.argv[3:]]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.mark.slow
def test_real_processes_slower_than_the_first_wait_are_restarted_later(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fake nodes (no libp2p) that, once the testnet is up, take 3 s to get ready, and
    a first restart wait of 2 s: the first attempt fails (the launcher stops the
    process), a later one (4 s, then 8 s) brings it back; every node runs at the end."""
    real = procs.node_command

    def command(delay: float) -> Any:
        def make(*args: Any, **kwargs: Any) -> list[str]:
            rest = real(*args, **kwargs)[1:]
            if rest and rest[0] == "-c":  # no `gossipmind` script beside python: python -c …
                rest = rest[2:]
            return [sys.executable, "-c", SLOW_START, str(FAKE), str(delay), "peered", *rest]

        return make

    monkeypatch.setattr(procs, "node_command", command(0.0))
    tn = Testnet(run_dir)
    tn.up(3, 1, status_every=0.2)
    monkeypatch.setattr(procs, "node_command", command(3.0))  # a store slow to open
    chaos = Chaos(tn, duration=20, seed=1, writers=0, restart_timeout=2.0)
    res = chaos.run(converge_timeout=10)
    actions = actions_of(chaos)
    assert res.kills >= 1, actions
    assert any(re.match(r"restart node-\d failed \(attempt 1, waited ≤ 2s\)", a) for a in actions)
    assert any(re.match(r"restart node-\d.* on attempt [2-9]", a) for a in actions), actions
    assert res.unlifted == [] and actions[-1] == "all faults lifted", res.summary()
    assert [n for n in ("node-0", "node-1", "node-2") if not tn.running(n)] == []
