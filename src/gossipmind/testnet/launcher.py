"""A local testnet of node *processes*: up, status, kill, restart, partition, heal, down.

Everything lives under a run dir (default ``testnet/.run/``)::

    genesis.json  nodes.json     the network (from :func:`~gossipmind.testnet.setup.prepare`)
    node-0/ … node-N-1/          data dirs; each gets node.toml (fixed port, bootstrap)
    logs/<proc>.out|.err|.log    ready/stopped lines, stderr (tracebacks), JSON logs (rotated)
    logs/<proc>.status           its nodes' latest status lines (replaced: does not grow)
    state.json                   pids, ports, peer ids, partition (see :mod:`.state`)

Each node listens on a fixed 127.0.0.1 port chosen at ``up`` (below the kernel's
ephemeral range), so its address survives restarts. Node ``i`` bootstraps to a
few earlier nodes (node-0, its "parent" ``(i-1)//2`` and ``i-1``); peer exchange
does the rest. With ``per_process=K``, K nodes share one process
(``gossipmind node --extra-data-dir``); ``kill`` then takes down the siblings too.

A :class:`Testnet` object holds no state of its own beyond the Popen objects of
the processes it started: every method reads ``state.json``, so commands issued by
other CLI invocations see the same testnet. Methods that change it take the run
dir's lock. Spawning, waiting for and stopping the processes is in its base class,
:class:`~gossipmind.testnet.launching.ProcessControl`.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gossipmind.core.errors import ConfigError, GossipmindError, NetworkError
from gossipmind.core.policy import Policy
from gossipmind.node.config import NodeConfig, load_config
from gossipmind.node.logfile import backups_problem, size_problem
from gossipmind.store.datadir import DataDir
from gossipmind.store.queries import Reader
from gossipmind.testnet import nodefiles, procs
from gossipmind.testnet.interrupt import terminating
from gossipmind.testnet.launching import STOP_TIMEOUT, ProcessControl
from gossipmind.testnet.setup import prepare
from gossipmind.testnet.state import (
    LOG_BACKUPS,
    LOG_MAX_BYTES,
    NodeEntry,
    ProcEntry,
    State,
    locked,
    peer_id_of,
    save_state,
    state_path,
    write_json_atomic,
)
from gossipmind.testnet.statusrows import status_rows

DEFAULT_RUN_DIR = Path("testnet") / ".run"
CONTROL_FILE = nodefiles.CONTROL_FILE


class Testnet(ProcessControl):
    """Node processes under one run dir; see the module docstring."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, run_dir: Path | str = DEFAULT_RUN_DIR) -> None:
        self.run_dir = Path(run_dir).expanduser().resolve()

    # -- queries --------------------------------------------------------------

    def exists(self) -> bool:
        return state_path(self.run_dir).exists()

    def node(self, ref: str) -> NodeEntry:
        return self.state().node(ref)

    def pids(self) -> list[int]:
        """Pids of our node processes that are still running."""
        st = self.state()
        return sorted(p.pid for p in st.procs.values() if p.pid and self.alive(p))

    def running(self, ref: str) -> bool:
        st = self.state()
        return self.alive(st.proc_of(st.node(ref)))

    def config(self, ref: str) -> NodeConfig:
        """The node's config (node.toml: fixed port, bootstrap), to run it in-process."""
        n = self.node(ref)
        return load_config(Path(n.dir))

    def store_info(self, ref: str) -> tuple[int, str] | None:
        """(ops, state root hex) from the node's SQLite file; None if it has none yet."""
        path = DataDir(Path(self.node(ref).dir)).store
        if not path.exists():
            return None
        try:
            with Reader(path) as r:
                return int(r.status()["ops"]), r.root().hex()
        except GossipmindError:
            return None

    def op_ids(self, ref: str) -> set[bytes]:
        """Ids of every op the node's store holds (for tests and checks)."""
        with Reader(DataDir(Path(self.node(ref).dir)).store) as r:
            return {bytes(i) for (i,) in r.conn.execute("SELECT id FROM ops")}

    def roots(self, refs: Iterable[str] | None = None) -> dict[str, str | None]:
        st = self.state()
        names = list(refs) if refs is not None else [n.name for n in st.nodes if not n.spare]
        out: dict[str, str | None] = {}
        for name in names:
            info = self.store_info(name)
            out[st.node(name).name] = info[1] if info else None
        return out

    def status(self) -> list[dict[str, Any]]:
        """One row per node: role, state, pid, peers, ops, root, converged… (see
        :func:`~gossipmind.testnet.statusrows.status_rows`)."""
        return status_rows(self)

    # -- up and down ----------------------------------------------------------

    def up(
        self,
        nodes: int,
        verifiers: int = 0,
        *,
        per_process: int = 1,
        spares: int = 0,
        status_every: float = 1.0,
        log_level: str = "info",
        log_max_bytes: int = LOG_MAX_BYTES,
        log_backups: int = LOG_BACKUPS,
        settings: dict[str, Any] | None = None,
        policy: Policy | None = None,
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """Create a testnet and start its ``nodes`` (not the spares); wait until connected.

        ``settings`` go into every node's ``node.toml`` (e.g. ``sync_interval``,
        ``learn``); verifier nodes also get ``verifier = true``. Each process's logs
        go to ``logs/<proc>.log``, rotated at ``log_max_bytes`` (``log_backups`` kept).
        """
        if nodes < 1 or not 0 <= verifiers < nodes:
            raise ConfigError("need --nodes ≥ 1 and 0 ≤ --verifiers < --nodes")
        if per_process < 1 or spares < 0 or status_every <= 0:
            raise ConfigError("--per-process must be ≥ 1, --spares ≥ 0, status interval > 0")
        if (why := size_problem(log_max_bytes) or backups_problem(log_backups)) is not None:
            raise ConfigError(f"log rotation: {why}")
        nodefiles.check_settings(settings or {})
        self.check_free()
        # SIGTERM/SIGHUP clean up like Ctrl-C: they stop what `up` started (_launch settles)
        with terminating(), locked(self.run_dir, create=True):
            self.check_free()
            st = State(
                run_dir=str(self.run_dir),
                network="",  # known once the genesis exists
                per_process=per_process,
                status_every=status_every,
                log_level=log_level,
                log_max_bytes=log_max_bytes,
                log_backups=log_backups,
            )
            # a testnet without nodes, recorded before anything else is created: however
            # `up` ends from here on (an error, a signal, even SIGKILL), the run dir holds
            # a stopped testnet, which `down --purge` deletes
            save_state(self.run_dir, st)
            try:
                specs = prepare(self.run_dir, nodes, verifiers, policy=policy, spares=spares)
            except (ValueError, FileExistsError) as exc:
                raise ConfigError(str(exc)) from exc
            ports = procs.free_ports(len(specs))
            st.network = json.loads((self.run_dir / "genesis.json").read_text())["network"]
            for spec, port in zip(specs, ports, strict=True):
                st.nodes.append(
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
            for n in st.nodes:
                nodefiles.write_node_toml(n, nodefiles.bootstrap_for(n, st), settings or {})
            regular = [n.name for n in st.nodes if not n.spare]
            for i in range(0, len(regular), per_process):
                group = regular[i : i + per_process]
                st.procs[f"p{i // per_process}"] = ProcEntry(id=f"p{i // per_process}", nodes=group)
                for name in group:
                    st.node(name).proc = f"p{i // per_process}"
            save_state(self.run_dir, st)
            try:
                self._launch(st, list(st.procs), timeout, need_peers=True)
            except BaseException:  # `up` promises a connected testnet: stop it all
                self._stop(st, list(st.procs), STOP_TIMEOUT, spawned=True)
                save_state(self.run_dir, st)
                raise
        return self.status()

    def check_free(self) -> None:
        """ConfigError unless ``up`` can create a testnet in the run dir."""
        if self.exists():
            live = self.pids()
            if live:
                raise ConfigError(
                    f"{self.run_dir} already runs a testnet (pids {', '.join(map(str, live))}): "
                    "`gossipmind testnet down` first, or use another --run-dir"
                )
            raise ConfigError(
                f"{self.run_dir} holds a stopped testnet: `gossipmind testnet down --purge` "
                "deletes it, or use another --run-dir"
            )
        if self.run_dir.exists() and any(p.name not in (".lock",) for p in self.run_dir.iterdir()):
            raise ConfigError(f"{self.run_dir} is not empty and holds no testnet: pick another")

    def down(self, *, timeout: float = STOP_TIMEOUT, purge: bool = False) -> list[dict[str, Any]]:
        """Stop every process this testnet started (SIGTERM, SIGKILL after ``timeout``).

        Only recorded pids that are still our processes are signalled. With
        ``purge``, the run dir is deleted afterwards.
        """
        with locked(self.run_dir):
            st = self.state()
            report = self._stop(st, list(st.procs), timeout)
            save_state(self.run_dir, st)
            if purge:
                if any(self.alive(p) for p in st.procs.values()):
                    raise NetworkError("some processes survived: not deleting the run dir")
                shutil.rmtree(self.run_dir)
        return report

    # -- one node -------------------------------------------------------------

    def kill(self, ref: str) -> dict[str, Any]:
        """SIGKILL the process hosting ``ref`` (its siblings die with it)."""
        with locked(self.run_dir):
            st = self.state()
            n = st.node(ref)
            proc = st.proc_of(n)
            if proc is None or not self.alive(proc):
                raise ConfigError(f"{n.name} is not running")
            if proc.pid is None:
                raise ConfigError(f"{n.name} has no recorded process")
            procs.signal_pid(proc.pid, signal.SIGKILL)
            survivors = procs.wait_gone({proc.pid: proc.starttime}, self.marker, STOP_TIMEOUT)
            procs.reap(proc.pid)
            if survivors:
                raise NetworkError(f"process {proc.pid} survived SIGKILL")
            proc.ended = "killed"
            save_state(self.run_dir, st)
            return {
                "node": n.name,
                "process": proc.id,
                "pid": proc.pid,
                "siblings": [x for x in proc.nodes if x != n.name],
            }

    def stop(self, ref: str, *, timeout: float = STOP_TIMEOUT) -> dict[str, Any]:
        """SIGTERM the process hosting ``ref`` (siblings too): a clean stop, the store
        is free for offline commands (e.g. ``gossipmind grant`` on node-0)."""
        with locked(self.run_dir):
            st = self.state()
            n = st.node(ref)
            proc = st.proc_of(n)
            if proc is None or not self.alive(proc):
                raise ConfigError(f"{n.name} is not running")
            report = self._stop(st, [proc.id], timeout)
            save_state(self.run_dir, st)
            return {
                "node": n.name,
                "process": proc.id,
                "pid": proc.pid,
                "siblings": [x for x in proc.nodes if x != n.name],
                "how": report[0]["how"],
            }

    def restart(self, ref: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Stop (if running) and start again the process hosting ``ref``, same data dirs.

        If the process does not get ready in time (or exits), it is stopped and
        NetworkError raised. If it is ready but finds no peer in time, it keeps
        running (it goes on dialing): the result's ``unconnected`` names those nodes.
        """
        return self._start(ref, timeout, restart=True)

    def start(self, ref: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Start a stopped node (its whole process) or a spare (in a process of its own).

        Failures as for :meth:`restart`.
        """
        return self._start(ref, timeout, restart=False)

    def _start(self, ref: str, timeout: float | None, *, restart: bool) -> dict[str, Any]:
        # SIGTERM/SIGHUP clean up like Ctrl-C: _launch stops the process it spawned
        with terminating(), locked(self.run_dir):
            st = self.state()
            n = st.node(ref)
            proc = st.proc_of(n)
            if proc is None:
                pid = f"s-{n.name}"
                proc = st.procs[pid] = ProcEntry(id=pid, nodes=[n.name])
                n.proc = pid
            elif self.alive(proc) and not restart:
                raise ConfigError(f"{n.name} is already running (pid {proc.pid})")
            try:
                if self.alive(proc):
                    self._stop(st, [proc.id], STOP_TIMEOUT)
                lonely = self._launch(st, [proc.id], timeout)
            finally:
                save_state(self.run_dir, st)
            return {
                "node": n.name,
                "process": proc.id,
                "pid": proc.pid,
                "siblings": [x for x in proc.nodes if x != n.name],
                "unconnected": lonely,
            }

    # -- partitions -------------------------------------------------------------

    def partition(self, groups: Sequence[Sequence[str]]) -> dict[str, list[str]]:
        """Cut the testnet into ``groups`` (names or indices); unnamed nodes form one more.

        Writes ``control.json`` in every data dir (spares included, so a node
        started later honours it); the daemons apply it within ~0.2 s. Returns
        node → names of the nodes it blocks.
        """
        with locked(self.run_dir):
            st = self.state()
            named: list[list[str]] = []
            seen: set[str] = set()
            for group in groups:
                refs = [r.strip() for r in group]
                if not any(refs):
                    raise ConfigError("an empty partition group")
                if not all(refs):
                    raise ConfigError(
                        f"partition group {','.join(group)!r} has an empty item (a stray comma?): "
                        "separate groups by spaces and the nodes of a group by commas only, "
                        "e.g. `partition 0,1 2,3`"
                    )
                names = [st.node(r).name for r in refs]
                for name in names:
                    if name in seen:
                        raise ConfigError(f"{name} is in two partition groups")
                    seen.add(name)
                named.append(names)
            if len(named) < 1:
                raise ConfigError("give at least one group, e.g. `partition 0,1 2,3`")
            rest = [n.name for n in st.nodes if n.name not in seen]
            if rest:
                named.append(rest)
            if len(named) < 2:
                raise ConfigError("a partition needs at least two groups")
            st.partition = named
            blocks = {n.name: self._blocked_names(n.name, named) for n in st.nodes}
            for n in st.nodes:
                peers = [st.node(b).peer_id for b in blocks[n.name]]
                _control(Path(n.dir), block=peers)
            save_state(self.run_dir, st)
            return blocks

    def heal(self, *, links: bool = True) -> None:
        """Lift the partition: every node accepts every peer again. With ``links``
        (the default) also clear every node's link faults (see :meth:`link_faults`):
        ``control.json`` is then ``{"block": []}`` in every data dir."""
        with locked(self.run_dir):
            st = self.state()
            st.partition = None
            for n in st.nodes:
                if links:
                    write_json_atomic(Path(n.dir) / CONTROL_FILE, {"block": []})
                else:
                    _control(Path(n.dir), block=[])
            save_state(self.run_dir, st)

    def link_faults(self, refs: Iterable[str], drop: float = 0.0, delay_s: float = 0.0) -> None:
        """Make these nodes' incoming gossip lossy (``drop``) and slow (``delay_s``);
        ``0, 0`` clears it (so does :meth:`heal`). Application-level: the daemons apply
        it within ~0.2 s; ``status`` shows it (``link_faults``)."""
        if not (0 <= drop < 1 and 0 <= delay_s <= 10):
            raise ConfigError("drop must be in [0, 1) and delay_s in [0, 10]")
        with locked(self.run_dir):
            st = self.state()
            dirs = [Path(st.node(ref).dir) for ref in refs]  # every ref known, or no change
            for d in dirs:
                _control(d, drop=drop, delay_s=delay_s)

    def blocked_peers(self, ref: str) -> set[str]:
        """Peer ids ``ref`` must refuse under the current partition (for in-process nodes)."""
        st = self.state()
        if st.partition is None:
            return set()
        name = st.node(ref).name
        return {st.node(b).peer_id for b in self._blocked_names(name, st.partition)}

    @staticmethod
    def _blocked_names(name: str, groups: list[list[str]]) -> list[str]:
        mine = next(g for g in groups if name in g)
        return [x for g in groups if g is not mine for x in g]


def _control(data_dir: Path, **changes: Any) -> None:
    """Update a node's control.json, keeping the keys not changed."""
    path = data_dir / CONTROL_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    doc.update(changes)
    write_json_atomic(path, doc)
