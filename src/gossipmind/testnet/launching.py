"""The process side of a :class:`~gossipmind.testnet.launcher.Testnet`: which processes
are ours, spawning them and waiting until their nodes are ready and connected, and
stopping them.

Moved out of ``launcher.py`` (which keeps the commands: up, down, kill, restart,
partition…) so that both stay under the module size limit. :class:`ProcessControl`
is a base class of ``Testnet``: its methods read and write the same
:class:`~gossipmind.testnet.state.State` and run dir.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from gossipmind.core.errors import NetworkError
from gossipmind.testnet import procs
from gossipmind.testnet.interrupt import settle
from gossipmind.testnet.state import ProcEntry, State, load_state, save_state

__all__ = ["STOP_TIMEOUT", "ProcessControl"]

STOP_TIMEOUT = 10.0


def _startup_timeout(processes: int) -> float:
    # import libp2p takes 0.5-0.75 s alone, 11-15 s when 20 processes start at once
    return 45.0 + 2.0 * processes


class ProcessControl:
    """Our node processes under ``run_dir``: recognise, spawn, wait for, stop."""

    run_dir: Path

    # -- queries --------------------------------------------------------------

    @property
    def marker(self) -> str:
        """A string every one of our processes has in its command line."""
        return str(self.run_dir) + os.sep

    def state(self) -> State:
        return load_state(self.run_dir)

    def alive(self, proc: ProcEntry | None) -> bool:
        return proc is not None and procs.is_ours(proc.pid, proc.starttime, self.marker)

    def latest(self, ref: str, *, st: State | None = None) -> dict[str, Any] | None:
        """The node's latest ``ready``/``status`` line from its current process, if any."""
        st = st or self.state()
        n = st.node(ref)
        proc = st.proc_of(n)
        if proc is None:
            return None
        best: dict[str, Any] | None = None
        tail = 16384 + 4096 * len(proc.nodes)
        for ev in procs.read_events(Path(proc.stdout), proc.offset, tail=tail):
            if ev.get("name") == n.name and ev["event"] in ("ready", "status"):
                best = ev
        status = procs.latest_status(proc.status, n.name, proc.started_at)  # newer than best?
        return status if status and (not best or status["ts"] >= best.get("ts", 0)) else best

    # -- process management -----------------------------------------------------

    def _launch(
        self, st: State, proc_ids: list[str], timeout: float | None, *, need_peers: bool = False
    ) -> list[str]:
        """Spawn these processes; wait until their nodes are ready and connected.

        Returns the nodes that are ready but found no peer in time (they keep
        running; with ``need_peers``, that is a NetworkError). If any process
        fails to get ready in time, or anything else goes wrong (Ctrl-C
        included), every process spawned here is stopped, recognised by its pid
        and start time alone, and the error re-raised. On success it calls
        :func:`~gossipmind.testnet.interrupt.settle`.
        """
        started_at = time.time()
        logs = self.run_dir / "logs"
        spawned: list[str] = []
        try:
            for pid_key in proc_ids:
                proc = st.procs[pid_key]
                dirs = [Path(st.node(x).dir) for x in proc.nodes]
                out, err = logs / f"{proc.id}.out", logs / f"{proc.id}.err"
                log, status = logs / f"{proc.id}.log", logs / f"{proc.id}.status"
                rotated = (log, st.log_max_bytes, st.log_backups)
                cmd = procs.node_command(dirs, st.status_every, st.log_level, rotated, status)
                with procs.signals_held():  # spawned and recorded, or neither
                    err_at = procs.size(err)
                    pid, offset = procs.spawn(cmd, out, err)
                    proc.pid, proc.offset, proc.ended = pid, offset, None
                    proc.starttime = procs.starttime(pid)
                    proc.stdout, proc.stderr, proc.started_at = str(out), str(err), started_at
                    proc.log, proc.status, proc.err_offset = str(log), str(status), err_at
                    spawned.append(pid_key)
            save_state(self.run_dir, st)
            limit = timeout if timeout is not None else _startup_timeout(len(proc_ids))
            deadline = time.monotonic() + limit
            self._wait_ready(st, proc_ids, deadline)
            others_up = (
                any(self.alive(p) for k, p in st.procs.items() if k not in proc_ids)
                or sum(len(st.procs[k].nodes) for k in proc_ids) > 1
            )
            lonely = self._wait_connected(st, proc_ids, started_at, deadline) if others_up else []
            if need_peers:
                _connected(lonely)
            settle()  # done: a signal from here on no longer undoes it (see interruptible)
        except BaseException:
            self._stop(st, spawned, STOP_TIMEOUT, spawned=True)
            raise
        return lonely

    def _wait_ready(self, st: State, proc_ids: list[str], deadline: float) -> None:
        waiting = {k: set(st.procs[k].nodes) for k in proc_ids}
        while True:
            for key in list(waiting):
                proc = st.procs[key]
                for ev in procs.read_events(Path(proc.stdout), proc.offset):
                    if ev["event"] == "ready" and ev.get("name") in waiting[key]:
                        node = st.node(ev["name"])
                        if ev.get("peer_id") != node.peer_id:
                            raise NetworkError(
                                f"{node.name} came up as {ev.get('peer_id')}, "
                                f"expected {node.peer_id}"
                            )
                        waiting[key].discard(node.name)
                if not waiting[key]:
                    del waiting[key]
                elif not self.alive(proc):
                    proc.ended = "exited"
                    why = procs.last_error(Path(proc.stderr), offset=proc.err_offset)
                    why = why or procs.last_error(Path(proc.log), since=proc.started_at)
                    raise NetworkError(
                        f"process {key} ({', '.join(proc.nodes)}) exited before it was ready: "
                        f"{why or 'no error logged'} (logs: {proc.stderr}, {proc.log})"
                    )
            if not waiting:
                return
            if time.monotonic() >= deadline:
                late = sorted(n for names in waiting.values() for n in names)
                raise NetworkError(f"not ready in time: {', '.join(late)}")
            time.sleep(0.1)

    def _wait_connected(
        self, st: State, proc_ids: list[str], since: float, deadline: float
    ) -> list[str]:
        """Wait until every node of these processes has a peer; return those that have
        none by ``deadline``."""
        names = {n for k in proc_ids for n in st.procs[k].nodes}
        while names:
            for name in list(names):
                ev = self.latest(name, st=st)
                if ev and ev["event"] == "status" and ev["ts"] >= since and ev["peers"] >= 1:
                    names.discard(name)
            if not names or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        return sorted(names)

    def _stop(
        self, st: State, proc_ids: list[str], timeout: float, *, spawned: bool = False
    ) -> list[dict[str, Any]]:
        """SIGTERM our live processes among ``proc_ids``, SIGKILL what outlives ``timeout``.

        ``spawned``: this invocation just spawned them, so the recorded pid and
        start time identify them, whatever their command line says.
        """
        marker = None if spawned else self.marker
        report: list[dict[str, Any]] = []
        live: dict[int, int | None] = {}
        for key in proc_ids:
            proc = st.procs[key]
            if proc.pid is not None and procs.is_ours(proc.pid, proc.starttime, marker):
                procs.signal_pid(proc.pid, signal.SIGTERM)
                live[proc.pid] = proc.starttime
                report.append(
                    {"process": key, "pid": proc.pid, "nodes": proc.nodes, "how": "stopped"}
                )
            elif proc.pid is not None:
                proc.ended = proc.ended or "exited"
                report.append(
                    {
                        "process": key,
                        "pid": proc.pid,
                        "nodes": proc.nodes,
                        "how": f"already {proc.ended or 'gone'}",
                    }
                )
        survivors = procs.wait_gone(live, marker, timeout)
        for pid in survivors:
            procs.signal_pid(pid, signal.SIGKILL)
        still = procs.wait_gone({p: live[p] for p in survivors}, marker, timeout)
        for entry in report:
            pid = entry["pid"]
            if pid not in live:
                continue
            procs.reap(pid)
            proc = st.procs[entry["process"]]
            if pid in still:
                entry["how"] = "SURVIVED SIGKILL"
            elif pid in survivors:
                entry["how"] = "killed (no exit within the SIGTERM timeout)"
                proc.ended = "killed"
            else:
                proc.ended = "stopped"
        return report


def _connected(lonely: list[str]) -> None:
    if lonely:
        raise NetworkError(f"no peers in time: {', '.join(lonely)}")
