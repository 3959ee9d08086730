"""Chaos: a testnet under a seeded schedule of faults while agents write.

For ``duration`` seconds, while writers keep writing ops through the nodes'
local APIs (an op is *acknowledged* when the API answers 201: it is committed
to that node's store), a seeded schedule SIGKILLs nodes and restarts them,
partitions the testnet and heals it, and makes links lossy and slow. Then every
fault is lifted and the run checks that every state root is equal and every
acknowledged op is present on every node.

The run acts on the nodes that are running when it starts (a stopped node is
left out, and left stopped). A SIGKILL takes down the victim's whole process
(``--per-process`` > 1: its siblings too); victims are picked among nodes whose
process runs, and the process is restarted as one. However the run ends (its
time is up, an error, Ctrl-C, SIGTERM or SIGHUP), it lifts every fault it may
have applied before it returns or raises: it heals the partition and clears
every node's link faults (``Testnet.heal``), and restarts every process that
ran at its start and is down; signals that arrive meanwhile are delivered once
that is done. What it could not lift is in ``ChaosResult.unlifted``.

A restart that fails (``Testnet.start`` stops a process that is not ready in
time, so every attempt starts it afresh: a node whose store takes long to open
needs a longer wait, not the same one again) leaves the process in the down set:
it is tried again after a delay that doubles (2 s, 4 s, … at most 30 s), each
attempt waiting twice as long as the one before (15 s, 30 s, … at most 120 s;
near the end of the run only what is left of it, but at least 15 s). The lift
goes on with those attempts for at most ``lift_timeout`` s in all (180 s by
default). Every failed attempt is in the action log. An attempt blocks the
schedule while it waits, as the single 15 s one did.

Faults are application-level (partitions: each node refuses the other side's
peers; lossy/slow links: incoming gossip dropped/delayed in the node). Real link
faults need ``tc netem``, which this kernel does not offer (see docs/reliability.md).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossipmind.api.transport import Http, discover
from gossipmind.core.encoding import encode
from gossipmind.core.errors import ConfigError, GossipmindError
from gossipmind.testing.kb import sample_report
from gossipmind.testnet.interrupt import deferred, terminating
from gossipmind.testnet.launcher import Testnet

MODE = "application-level partitions and lossy/slow links (tc netem is not available here)"
RESTART_TIMEOUT = 15.0  # s the first attempt to restart a killed process waits for it
RESTART_TIMEOUT_MAX = 120.0  # each later attempt waits twice as long, up to this
RETRY_DELAY = 2.0  # s from a failed attempt to the next, doubling each time…
RETRY_DELAY_MAX = 30.0  # …up to this
LIFT_TIMEOUT = 180.0  # s the lift spends on restarts at most, every attempt included
LIFT_ROUNDS = 50  # and at most this many rounds of attempts (a bound in count too)


@dataclass
class Down:
    """A process the run took down, until it runs again."""

    nodes: list[str]  # its nodes, the one to start first
    when: float  # run time of its next restart attempt
    failures: int = 0  # restart attempts that failed
    error: str = ""  # why the last one failed


@dataclass
class ChaosResult:
    seed: int
    duration: float
    mode: str = MODE
    actions: list[tuple[float, str]] = field(default_factory=list)
    acked: dict[str, str] = field(default_factory=dict)  # op id hex -> node that acked it
    write_errors: int = 0
    kills: int = 0
    partitions: int = 0
    link_faults: int = 0
    roots: dict[str, str | None] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)  # node -> acked ops it lacks
    converged: bool = False
    converge_s: float = 0.0
    left_out: list[str] = field(default_factory=list)  # not running at the start
    unlifted: list[str] = field(default_factory=list)  # faults the run could not undo

    @property
    def ok(self) -> bool:
        return self.converged and not any(self.missing.values()) and not self.unlifted

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "duration_s": self.duration,
            "mode": self.mode,
            "acked_ops": len(self.acked),
            "write_errors": self.write_errors,
            "kills": self.kills,
            "partitions": self.partitions,
            "link_faults": self.link_faults,
            "converged": self.converged,
            "converge_s": round(self.converge_s, 1),
            "missing": self.missing,
            "roots": self.roots,
            "left_out": self.left_out,
            "unlifted": self.unlifted,
            "ok": self.ok,
            "actions": [f"{t:.1f}s {a}" for t, a in self.actions],
        }


class Chaos:
    def __init__(
        self,
        tn: Testnet,
        *,
        duration: float = 120.0,
        seed: int = 1,
        writers: int = 3,
        write_interval: float = 0.05,
        on_action: Callable[[float, str], None] | None = None,
        restart_timeout: float = RESTART_TIMEOUT,
        lift_timeout: float = LIFT_TIMEOUT,
    ) -> None:
        self.tn = tn
        self.duration = duration
        self.restart_timeout = restart_timeout  # the first attempt's; later ones wait longer
        self.lift_timeout = lift_timeout
        self.down: dict[str, Down] = {}  # process -> when and how it is to be restarted
        self.rng = random.Random(seed)
        self.result = ChaosResult(seed, duration)
        self.writers = writers
        self.write_interval = write_interval
        self.on_action = on_action or (lambda t, a: None)
        st = tn.state()
        regular = [n for n in st.nodes if not n.spare]
        up = [n for n in regular if tn.alive(st.proc_of(n))]
        if len(up) < 2:
            down = ", ".join(n.name for n in regular if n not in up) or "none"
            raise ConfigError(
                f"chaos needs at least two running nodes; {len(up)} of {len(regular)} run "
                f"(not running: {down}): `gossipmind testnet start NODE` first"
            )
        self.names = [n.name for n in up]
        self.result.left_out = [n.name for n in regular if n not in up]
        # the processes running at the start: whatever ends the run, they run again after it
        self.procs = sorted({n.proc for n in up if n.proc})
        self.dirs = {n.name: Path(n.dir) for n in st.nodes}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def act(self, what: str) -> None:
        t = self.now()
        self.result.actions.append((t, what))
        self.on_action(t, what)

    # -- writers ------------------------------------------------------------------------

    def _writer(self, k: int) -> None:
        # signals go to the main thread, where the schedule runs and cleans up
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        rng = random.Random(self.result.seed * 1000 + k)
        i = 0
        while not self._stop.is_set():
            name = rng.choice(self.names)
            try:
                url, token = discover(self.dirs[name])
                http = Http(url, token, timeout=3)
                try:
                    body = sample_report(template=f"chaos writer {k} op {i} <*>", count=1)
                    status, doc = http.request(
                        "POST", "/v1/ops", {"kind": "pattern.report", "body": encode(body).hex()}
                    )
                finally:
                    http.close()
                if status == 201:
                    with self._lock:
                        self.result.acked[doc["op"]] = name
                    i += 1
                else:
                    self.result.write_errors += 1
            except GossipmindError:
                self.result.write_errors += 1  # the node is down or partitioned: try another
            self._stop.wait(self.write_interval)

    # -- the schedule -------------------------------------------------------------------

    def _schedule(self) -> None:
        faulty: dict[str, float] = {}  # node -> when to clear link faults
        healed_at: float | None = None
        while self.now() < self.duration:
            now = self.now()
            for proc, d in list(self.down.items()):
                if now >= d.when:
                    self._restart(proc, d)
            for name, when in list(faulty.items()):
                if now >= when:
                    self.tn.link_faults([name])
                    del faulty[name]
                    self.act(f"clear link faults on {name}")
            if healed_at is not None and now >= healed_at:
                self.tn.heal(links=False)  # the lossy links end on their own schedule
                healed_at = None
                self.act("heal")
            roll = self.rng.random()
            downed = [n for d in self.down.values() for n in d.nodes]
            alive = self._alive()
            if roll < 0.35 and len(downed) < len(self.names) // 3 and len(alive) > 2:
                victim = self.rng.choice(alive)
                self._kill(victim, now + self.rng.uniform(3, 8))
            elif roll < 0.6 and healed_at is None:
                shuffled = list(self.names)
                self.rng.shuffle(shuffled)
                cut = self.rng.randint(1, len(shuffled) - 1)
                self.tn.partition([shuffled[:cut], shuffled[cut:]])
                healed_at = now + self.rng.uniform(4, 10)
                self.result.partitions += 1
                self.act(f"partition {sorted(shuffled[:cut])} | {sorted(shuffled[cut:])}")
            elif roll < 0.9:
                name = self.rng.choice(self.names)
                drop, delay = (
                    round(self.rng.uniform(0.1, 0.5), 2),
                    round(self.rng.uniform(0, 0.3), 2),
                )
                self.tn.link_faults([name], drop, delay)
                faulty[name] = now + self.rng.uniform(4, 10)
                self.result.link_faults += 1
                self.act(f"lossy link on {name}: drop {drop}, delay ≤ {delay}s")
            time.sleep(self.rng.uniform(2, 5))

    def _alive(self) -> list[str]:
        """The run's nodes whose process runs now (a killed node's siblings do not)."""
        st = self.tn.state()
        return [n for n in self.names if self.tn.alive(st.proc_of(st.node(n)))]

    def _kill(self, victim: str, when: float) -> None:
        try:
            info = self.tn.kill(victim)
        except GossipmindError as exc:  # it died meanwhile, or survived SIGKILL: skip
            self.act(f"SIGKILL {victim} skipped: {exc}")
            return
        siblings = list(info["siblings"])
        self.down[str(info["process"])] = Down([victim, *siblings], when)
        self.result.kills += 1
        also = f" (its process also hosts {', '.join(siblings)}: down too)" if siblings else ""
        self.act(f"SIGKILL {victim}{also}")

    def attempt_timeout(self, attempt: int) -> float:
        """How long restart attempt ``attempt`` (1, 2, …) waits for the node: the first
        ``restart_timeout``, each later one twice as long, at most RESTART_TIMEOUT_MAX."""
        longest = max(RESTART_TIMEOUT_MAX, self.restart_timeout)
        return min(self.restart_timeout * 2.0 ** min(attempt - 1, 16), longest)

    @staticmethod
    def retry_delay(failures: int) -> float:
        """The wait before the next attempt after ``failures`` failed ones."""
        return min(RETRY_DELAY * 2.0 ** min(failures - 1, 16), RETRY_DELAY_MAX)

    def _attempt(self, proc: str, d: Down, limit: float) -> dict[str, Any] | None:
        """One attempt to start the process ``proc`` again, waiting at most ``limit`` s;
        its ``Testnet.start`` result, or None after recording the failure in ``d``
        (then ``d.when`` is the time of the next attempt)."""
        attempt = d.failures + 1
        timeout = min(self.attempt_timeout(attempt), limit)
        try:
            info = self.tn.start(d.nodes[0], timeout=timeout)
        except GossipmindError as exc:  # not ready in time (it was stopped), exited, …
            if self._runs(proc):  # …or started meanwhile (by hand): it is up all the same
                del self.down[proc]
                note = f" (it was running already: {exc})"
                return {
                    "siblings": d.nodes[1:],
                    "unconnected": [],
                    "attempt": attempt,
                    "note": note,
                }
            d.failures, d.error = attempt, str(exc)
            delay = self.retry_delay(attempt)
            d.when = self.now() + delay
            self.act(
                f"restart {d.nodes[0]} failed (attempt {attempt}, waited ≤ {timeout:.0f}s): "
                f"{exc}; retry in {delay:.0f}s"
            )
            return None
        del self.down[proc]
        return {**info, "attempt": attempt, "note": ""}

    def _runs(self, proc: str) -> bool:
        try:
            return self.tn.alive(self.tn.state().procs.get(proc))
        except GossipmindError:
            return False

    def _restart(self, proc: str, d: Down) -> None:
        """Restart a process the schedule killed; on failure it stays down, to be
        tried again (a longer wait, after a delay). An attempt does not wait past
        the end of the run by more than its first one would: the lift goes on."""
        limit = max(self.restart_timeout, self.duration - self.now())
        info = self._attempt(proc, d, limit)
        if info is None:
            return
        name = d.nodes[0]
        also = f" (with {', '.join(info['siblings'])})" if info["siblings"] else ""
        nth = f" on attempt {info['attempt']}" if info["attempt"] > 1 else ""
        if info["unconnected"]:  # partitioned from every peer: it joins at heal
            self.act(f"restart {name}{also}{nth} (no reachable peer yet)")
        else:
            self.act(f"restart {name}{also}{nth}{info['note']}")

    def _lift(self) -> None:
        """Undo every fault the run may have applied, whatever ended it: heal (which
        clears every node's link faults too), then restart every process that ran at
        the start and is down. A step that fails is recorded and the next one runs;
        a restart that fails is tried again (as in the schedule) for at most
        ``lift_timeout`` s in all, and what is still down is in ``unlifted``."""
        try:
            self.tn.heal()
        except Exception as exc:  # noqa: BLE001 - recorded; the restarts must still run
            self.result.unlifted.append(f"partition and link faults: {exc}")
        try:
            self._lift_restarts()
        finally:
            for d in self.down.values():
                why = d.error or "no attempt in time"
                tries = f"{d.failures} attempt{'s' if d.failures != 1 else ''}"
                self.result.unlifted.append(f"{', '.join(d.nodes)} still down ({tries}): {why}")
            if self.result.unlifted:
                self.act("NOT every fault lifted: " + "; ".join(self.result.unlifted))
            else:
                self.act("all faults lifted")

    def _lift_restarts(self) -> None:
        """Restart what is down among the processes that ran at the start, in rounds,
        until they all run, LIFT_ROUNDS rounds or ``lift_timeout`` s are over. The
        first round tries every one at once; later ones those whose retry is due."""
        deadline = time.monotonic() + self.lift_timeout
        st = self.tn.state()
        for key in self.procs:
            proc = st.procs.get(key)
            if proc is not None and key not in self.down and not self.tn.alive(proc):
                self.down[key] = Down(list(proc.nodes), 0.0)  # went down another way
            elif key in self.down and self._runs(key):
                del self.down[key]  # started by hand meanwhile
        for rnd in range(LIFT_ROUNDS):
            for key, d in list(self.down.items()):
                left = deadline - time.monotonic()
                if left < min(self.restart_timeout, self.lift_timeout):
                    return  # too little time to start a node: it would be stopped again
                if rnd > 0 and d.when > self.now():
                    continue
                try:
                    info = self._attempt(key, d, left)
                except Exception as exc:  # noqa: BLE001 - recorded; the other processes next
                    d.failures, d.error = d.failures + 1, f"{type(exc).__name__}: {exc}"
                    d.when = self.now() + self.retry_delay(d.failures)
                    self.act(f"restart {', '.join(d.nodes)} failed: {d.error}")
                    continue
                if info is not None:
                    nth = f" on attempt {info['attempt']}" if info["attempt"] > 1 else ""
                    self.act(f"restart {', '.join(d.nodes)}{nth}{info['note']}")
            if not self.down:
                return
            wait = min(d.when for d in self.down.values()) - self.now()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(max(0.0, min(wait, left)))

    def run(self, *, converge_timeout: float = 90.0) -> ChaosResult:
        """The schedule, then the check. Every fault is lifted on any exit (SIGTERM and
        SIGHUP raise :class:`~gossipmind.testnet.interrupt.Terminated`, after the lift)."""
        if self.result.left_out:
            self.act(f"not running, left out of this run: {', '.join(self.result.left_out)}")
        threads = [
            threading.Thread(target=self._writer, args=(k,), daemon=True)
            for k in range(self.writers)
        ]
        with terminating():
            for t in threads:
                t.start()
            try:
                self._schedule()
            finally:
                try:
                    with deferred():  # Ctrl-C and SIGTERM wait until every fault is lifted
                        self._lift()
                finally:
                    self._stop.set()
                    for t in threads:
                        t.join(10)
            return self._check(converge_timeout)

    def _check(self, converge_timeout: float) -> ChaosResult:
        """Wait until every state root is equal and every acknowledged op is everywhere."""
        t0 = time.monotonic()
        acked = {bytes.fromhex(h) for h in self.result.acked}
        while True:
            roots = self.tn.roots(self.names)
            ids = {n: self.tn.op_ids(n) for n in self.names}
            missing = {n: len(acked - ids[n]) for n in self.names}
            values = set(roots.values())
            if (len(values) == 1 and None not in values and not any(missing.values())) or (
                time.monotonic() - t0 > converge_timeout
            ):
                break
            time.sleep(1.0)
        self.result.converge_s = time.monotonic() - t0
        self.result.roots = roots
        self.result.missing = missing
        self.result.converged = len(values) == 1 and None not in values
        return self.result
