"""The launcher's parts without node processes: peer ids, pid checks, state, partitions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tnkit import same_process_runs, stopped_testnet

from gossipmind.core.errors import ConfigError, NotFound
from gossipmind.testnet import Testnet, peer_id_of, procs
from gossipmind.testnet.procs import free_ports, is_ours, read_events, starttime
from gossipmind.testnet.state import ProcEntry, save_state
from gossipmind.testnet.statusrows import builds_note


def test_peer_id_matches_libp2p() -> None:
    from gossipmind.core.identity import Identity
    from gossipmind.net import peer_id_from_seed

    for _ in range(5):
        seed = os.urandom(32)
        assert peer_id_of(Identity(seed).public) == peer_id_from_seed(seed)


def test_is_ours_checks_command_line_and_start_time(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    marker = str(tmp_path / "run") + os.sep
    started = starttime(sleeper.pid)
    assert started is not None
    assert is_ours(sleeper.pid, started, marker)
    assert not is_ours(sleeper.pid, started + 1, marker), "a reused pid is not ours"
    assert not is_ours(sleeper.pid, started, str(tmp_path / "other") + os.sep)
    assert not is_ours(os.getpid(), starttime(os.getpid()), marker)
    assert not is_ours(None, None, marker)


def test_down_never_signals_a_process_it_did_not_start(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    tn = stopped_testnet(tmp_path)
    st = tn.state()
    # a recorded pid that now belongs to someone else (reused): same command line,
    # another start time
    started = starttime(sleeper.pid)
    assert started is not None
    st.procs["p0"] = ProcEntry(id="p0", nodes=["node-0"], pid=sleeper.pid, starttime=started + 7)
    st.node("node-0").proc = "p0"
    save_state(tn.run_dir, st)
    assert tn.pids() == []
    report = tn.down(timeout=0.5)
    assert report[0]["how"].startswith("already")
    assert sleeper.poll() is None and same_process_runs(sleeper.pid, started)
    with pytest.raises(ConfigError, match="not running"):
        tn.kill("node-0")
    assert sleeper.poll() is None


def test_status_of_a_stopped_testnet_reads_the_stores(tmp_path: Path) -> None:
    tn = stopped_testnet(tmp_path)
    rows = {r["name"]: r for r in tn.status()}
    assert [r["state"] for r in rows.values()] == ["not started"] * 4 + ["spare"]
    assert all(r["ops"] == 5 and r["converged"] for r in rows.values())  # genesis + 4 grants
    assert rows["node-0"]["role"] == "admin" and rows["node-1"]["role"] == "verifier"
    assert len({r["root"] for r in rows.values()}) == 1
    assert rows["node-2"]["peers"] is None and rows["node-2"]["pid"] is None


def test_partition_blocks_the_other_groups_and_heal_clears(tmp_path: Path) -> None:
    tn = stopped_testnet(tmp_path)
    st = tn.state()
    blocks = tn.partition([["0", "node-1"], ["2"]])  # node-3 and spare node-4 form a third
    assert blocks["node-0"] == ["node-2", "node-3", "node-4"]
    assert blocks["node-2"] == ["node-0", "node-1", "node-3", "node-4"]
    assert blocks["node-3"] == ["node-0", "node-1", "node-2"]
    control = json.loads((Path(st.node("node-0").dir) / "control.json").read_text())
    assert control["block"] == [st.node(n).peer_id for n in ("node-2", "node-3", "node-4")]
    assert tn.blocked_peers("node-4") == {st.node(n).peer_id for n in ("node-0", "1", "2")}
    assert [r["group"] for r in tn.status()] == [0, 0, 1, 2, 2]
    tn.heal()
    assert tn.blocked_peers("node-0") == set()
    for n in st.nodes:
        assert json.loads((Path(n.dir) / "control.json").read_text()) == {"block": []}


@pytest.mark.parametrize(
    ("groups", "error", "match"),
    [
        ([["0", "1"], ["1", "2"]], ConfigError, "in two partition groups"),
        ([["0", "9"]], NotFound, "no node '9'"),
        ([["0", "1", "2", "3", "4"]], ConfigError, "at least two groups"),
        ([["0"], [""]], ConfigError, "empty partition group"),
    ],
)
def test_bad_partitions_are_refused(
    tmp_path: Path, groups: list[list[str]], error: type[Exception], match: str
) -> None:
    tn = stopped_testnet(tmp_path)
    with pytest.raises(error, match=match):
        tn.partition(groups)


def test_up_refuses_bad_input_before_touching_the_run_dir(tmp_path: Path) -> None:
    run = tmp_path / "run"
    tn = Testnet(run)
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        tn.up(2, 0, settings={"colour": "blue"})
    with pytest.raises(ConfigError, match="--verifiers"):
        tn.up(2, 2)
    assert not run.exists() or not any(p.name != ".lock" for p in run.iterdir())
    stopped = stopped_testnet(tmp_path / "other")
    with pytest.raises(ConfigError, match="holds a stopped testnet"):
        stopped.up(2, 0)


def test_node_refs_by_name_or_index(tmp_path: Path) -> None:
    tn = stopped_testnet(tmp_path)
    assert tn.node("3").name == tn.node("node-3").name == "node-3"
    with pytest.raises(NotFound, match="nodes: node-0, node-1"):
        tn.node("node-12")


def test_read_events_skips_partial_and_foreign_lines(tmp_path: Path) -> None:
    log = tmp_path / "p.out"
    lines = [json.dumps({"event": "ready", "name": f"node-{i}", "pad": "x" * 50}) for i in range(9)]
    log.write_text("not json\n" + "\n".join(lines) + '\n{"event": "sta')
    assert [e["name"] for e in read_events(log)] == [f"node-{i}" for i in range(9)]
    tail = list(read_events(log, tail=200))
    assert 0 < len(tail) < 9 and tail[-1]["name"] == "node-8"
    assert list(read_events(tmp_path / "missing.out")) == []


def test_free_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(p < low for p in ports)


def test_a_node_that_exits_while_it_is_checked_is_not_left_a_zombie(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`is_ours` reaps, then reads the start time; a process that exited in
    between read as gone (a zombie has no start time) and was never reaped: the
    demo said "left running: 0" while its pid stayed in /proc."""
    pid, _ = procs.spawn(["/bin/sleep", "30"], tmp_path / "out", tmp_path / "err")
    started = starttime(pid)
    real = procs.starttime

    def exits_meanwhile(p: int) -> int | None:
        os.kill(p, signal.SIGKILL)
        for _ in range(500):  # until it is a zombie (not reaped yet)
            if procs._stat(p) is not None and procs._stat(p)[0] == "Z":
                break
            time.sleep(0.01)
        return real(p)

    try:
        monkeypatch.setattr(procs, "starttime", exits_meanwhile)
        assert procs.wait_gone({pid: started}, None, 5.0) == set()
        assert not Path(f"/proc/{pid}").exists()
    finally:
        procs.reap(pid)


LEADER_EXITS_FIRST = """
import ctypes, threading, time
threading.Thread(target=time.sleep, args=(1.5,)).start()  # still exiting after main
time.sleep(0.1)
ctypes.CDLL(None).pthread_exit(None)  # the main thread ends; the process lives on
"""


def test_a_process_whose_main_thread_ended_first_is_waited_for_and_reaped(
    tmp_path: Path,
) -> None:
    """Under load a node's main thread could end while another thread finished
    its exit (a disk write): /proc reads the process as a zombie, so it counted
    as gone, but it could not be reaped yet and never was afterwards (the demo
    said "left running: 0" with its pid in /proc). It is waited for now."""
    script = tmp_path / "leader.py"
    script.write_text(LEADER_EXITS_FIRST)
    pid, _ = procs.spawn([sys.executable, str(script)], tmp_path / "out", tmp_path / "err")
    try:
        started = starttime(pid)
        for _ in range(500):  # until only the main thread has ended
            fields = procs._stat(pid)
            if fields is not None and fields[0] == "Z" and procs.exiting(pid):
                break
            time.sleep(0.01)
        assert procs.exiting(pid) and starttime(pid) is None and procs.lingers(pid)
        assert is_ours(pid, started, None)  # not gone yet
        assert procs.wait_gone({pid: started}, None, 20.0) == set()
        assert not Path(f"/proc/{pid}").exists() and not procs.lingers(pid)
    finally:
        procs.reap(pid)


def test_a_reused_pid_whose_main_thread_ended_is_not_ours(tmp_path: Path) -> None:
    """A process whose main thread ended while others run reads as a zombie with
    threads: `is_ours` took it for our node, still exiting, before it compared the
    start time and the command line. A pid reused by an unrelated program whose
    main thread calls pthread_exit was ours for as long as it ran: `testnet down`
    sent it SIGTERM, then SIGKILL."""
    script = tmp_path / "other.py"
    script.write_text(LEADER_EXITS_FIRST.replace("1.5", "30"))
    pid, _ = procs.spawn([sys.executable, str(script)], tmp_path / "out", tmp_path / "err")
    try:
        started = starttime(pid)
        assert started is not None
        for _ in range(500):  # until only the main thread has ended
            fields = procs._stat(pid)
            if fields is not None and fields[0] == "Z" and procs.exiting(pid):
                break
            time.sleep(0.01)
        assert procs.exiting(pid) and starttime(pid) is None
        # the node we recorded under this pid started at another time
        assert not is_ours(pid, started + 1, None)
        assert not is_ours(pid, started + 1, "gm-testnet-marker")
        assert not is_ours(pid, None, "gm-testnet-marker")
        assert is_ours(pid, started, None)  # the one we started: not gone yet
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_the_status_table_says_when_nodes_run_different_builds() -> None:
    """A rolling upgrade: which nodes run which commit (node/build.py); nodes of a
    build from before lines named it are "unknown"; stopped nodes do not count."""

    def row(name: str, commit: str | None, state: str = "running") -> dict[str, Any]:
        return {"name": name, "commit": commit, "state": state}

    one = [row("node-0", "8779330466a1"), row("node-1", "8779330466a1")]
    assert builds_note(one) is None
    assert builds_note([*one, row("node-2", "7a06e9e00000", "killed")]) is None
    mixed = [*one, row("node-2", None), row("node-3", "7a06e9e00000")]
    assert builds_note(mixed) == (
        "3 builds run: 7a06e9e00000 (node-3), 8779330466a1 (node-0, node-1), unknown (node-2)"
    )
