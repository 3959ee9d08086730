"""Run a scenario against a running testnet: agents, a monitor, the timeline.

Agents are threads in this process, one per agent node, each with the real SDK
(`gossipmind.Client`) talking to its node's local API, calling the scenario's
fault-injecting service through ``@client.resilient``. A monitor polls node-0's
API and turns what changes into a timeline: the pattern crossing the threshold,
proposals with their drill results, attestations, acceptance. Late agents start
calling only once the fleet has learned — they meet the failure for the first
time with the fix already in their cache.

A testnet may already hold what earlier runs left: the monitor follows only the
patterns of the scenario's own service and operation and the fixes for them, and
what node-0 held before the run (fixes, their statuses and attestations, a
pattern already over the threshold) is reported once as known, never as news.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossipmind.api.client import Client
from gossipmind.api.transport import Http, discover
from gossipmind.core.encoding import encode
from gossipmind.core.errors import ConfigError, GossipmindError
from gossipmind.testnet.launcher import Testnet
from gossipmind.testnet.scenario import FaultService, Scenario


@dataclass
class Call:
    t: float
    agent: str
    ok: bool
    recovered: bool


@dataclass
class Event:
    t: float
    kind: str  # threshold, proposed, attested, accepted, …, late, recovery, known, stopped
    text: str


@dataclass
class AgentInfo:
    name: str
    node: str
    late: bool
    calls: int = 0
    failed: int = 0
    recoveries: int = 0
    reported: int = 0
    started_at: float | None = None


@dataclass
class RunResult:
    scenario: Scenario
    calls: list[Call] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    agents: dict[str, AgentInfo] = field(default_factory=dict)
    fixes: list[dict[str, Any]] = field(default_factory=list)
    patterns: list[dict[str, Any]] = field(default_factory=list)
    roots: dict[str, str | None] = field(default_factory=dict)
    learned_at: float | None = None
    duration: float = 0.0
    poison_fix: str | None = None
    known_before: list[str] = field(default_factory=list)  # fixes accepted before the run
    left_out: int = 0  # agents (late ones first) with no non-verifier node to run on

    def left_out_text(self) -> str | None:
        """What the run lacks when the testnet has too few non-verifier nodes."""
        if not self.left_out:
            return None
        sc = self.scenario
        late = min(self.left_out, sc.late_agents)
        parts = [f"{late} late"] if late else []
        if self.left_out > late:
            parts.append(f"{self.left_out - late} on-time")
        what = " and ".join(parts)
        return (
            f"{self.left_out} of the scenario's {sc.agents + sc.late_agents} agents "
            f"({what}) left out: one per non-verifier node, and this testnet has only "
            f"{len(self.agents)}; `testnet up` with more --nodes runs them all"
        )

    def first(self, kind: str) -> Event | None:
        return next((e for e in self.events if e.kind == kind), None)

    def error_rate(
        self, since: float = 0.0, until: float = float("inf"), agent: str | None = None
    ) -> float:
        sel = [
            c for c in self.calls if since <= c.t < until and (agent is None or c.agent == agent)
        ]
        return sum(1 for c in sel if not c.ok) / len(sel) if sel else 0.0

    @property
    def converged(self) -> bool:
        values = [r for r in self.roots.values() if r is not None]
        return bool(values) and len(set(values)) == 1

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """The accepted fixes for the scenario's pattern (``fixes`` holds only those)."""
        return [f for f in self.fixes if f["status"] == "accepted"]


@dataclass
class Before:
    """What node-0 held when the run started: none of it is news of this run."""

    statuses: dict[str, str] = field(default_factory=dict)  # fix id → status
    attested: set[tuple[str, str]] = field(default_factory=set)  # (fix id, verifier)
    over_threshold: set[str] = field(default_factory=set)  # the scenario's patterns


def customer(agent: str, i: int) -> str:
    return f"{agent.replace('-', '')}.customer{i}@example.com"


class Runner:
    def __init__(
        self,
        tn: Testnet,
        sc: Scenario,
        *,
        on_event: Callable[[Event], None] | None = None,
        poll_s: float = 0.3,
        learn_timeout: float = 45.0,
    ) -> None:
        self.tn = tn
        self.sc = sc
        self.on_event = on_event or (lambda e: None)
        self.poll_s = poll_s
        self.learn_timeout = learn_timeout
        self.result = RunResult(sc)
        self._lock = threading.Lock()
        self._learned = threading.Event()
        self._done = threading.Event()
        self.t0 = time.monotonic()
        st = tn.state()
        nodes = [n for n in st.nodes if not n.spare]
        up = {n.name for n in nodes if tn.alive(st.proc_of(n))}
        if "node-0" not in up:
            raise ConfigError(
                "node-0 is not running (the run follows the network through its API): "
                "`gossipmind testnet start node-0` first"
            )
        if sc.poison is not None:  # it proposes through that node's API, before any agent runs
            poisoner = str(sc.poison.get("node", "node-1"))
            if poisoner not in up:
                where = "is not running" if poisoner in {n.name for n in nodes} else "is not in"
                raise ConfigError(
                    f"{sc.name}'s poisoner proposes its fix from {poisoner} (its [poison] node),"
                    f" which {where} this testnet: `gossipmind testnet up --nodes"
                    f" {int(poisoner.rsplit('-', 1)[-1]) + 1 if poisoner[-1:].isdigit() else 'N'}`"
                    " or more, or `gossipmind testnet start` it"
                )
        hosts = [n for n in nodes if n.role != "verifier"]
        needed = sc.agents + sc.late_agents  # one node each
        wanted = min(len(hosts), needed)
        few = "" if wanted == needed else f"; this testnet has {len(hosts)}"
        hosts = [n for n in hosts if n.name in up]
        if len(hosts) < wanted:  # an agent on a stopped node learns nothing and tells nothing
            stopped = ", ".join(n.name for n in nodes if n.role != "verifier" and n.name not in up)
            raise ConfigError(
                f"{sc.name} needs {needed} running non-verifier nodes, one per agent "
                f"({sc.agents} + {sc.late_agents} late){few}, but "
                f"{stopped} {'are' if ',' in stopped else 'is'} not running: "
                "`gossipmind testnet start NODE` first"
            )
        for i, n in enumerate(hosts[:wanted]):
            name = f"agent-{i + 1}"
            self.result.agents[name] = AgentInfo(name, n.name, late=i >= sc.agents)
        self.result.left_out = needed - wanted
        self._dirs = {n.name: Path(n.dir) for n in nodes}
        self._names = {n.key: n.name for n in nodes}
        self._running = [n.name for n in nodes if n.name in up]  # the roots to compare
        self._stopped = [n.name for n in nodes if n.name not in up]
        self.before = Before()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def emit(self, kind: str, text: str) -> None:
        e = Event(self.now(), kind, text)
        with self._lock:
            self.result.events.append(e)
        self.on_event(e)

    # -- agents -------------------------------------------------------------------------

    def _agent(self, info: AgentInfo) -> None:
        sc = self.sc
        client = Client(self._dirs[info.node])
        try:
            client.wait_ready(10)
            if info.late:
                self._learned.wait(self.learn_timeout + 10)
                self.emit(
                    "late",
                    f"{info.name} (on {info.node}) starts calling {sc.service}, "
                    f"never having seen its failures",
                )
            info.started_at = self.now()
            svc = FaultService(sc, info.name)
            call = client.resilient(
                service=sc.service, operation=sc.operation, idempotent=sc.idempotent
            )
            wrapped = call(svc.call)
            for i in range(sc.calls):
                before = client.stats.recoveries
                try:
                    wrapped(i, customer(info.name, i), 1000 + i)
                    ok = True
                except Exception:  # noqa: BLE001 - the agent's call failed for good
                    ok = False
                recovered = client.stats.recoveries > before
                with self._lock:
                    self.result.calls.append(Call(self.now(), info.name, ok, recovered))
                    info.calls += 1
                    info.failed += 0 if ok else 1
                if recovered:
                    if info.recoveries == 0 and info.late:
                        self.emit(
                            "recovery",
                            f"{info.name} recovered from its very first failure "
                            f"with the fleet's fix",
                        )
                    info.recoveries += 1
                time.sleep(sc.interval_ms / 1000)
            info.reported = client.stats.reports_sent + client.stats.reports_queued
        finally:
            client.close()

    # -- the monitor --------------------------------------------------------------------

    def _node0(self) -> Http:
        url, token = discover(self._dirs["node-0"])
        return Http(url, token, timeout=5)

    def _mine(self, p: dict[str, Any]) -> bool:
        """A pattern of the scenario's own service and operation."""
        return bool(p["service"] == self.sc.service and p["operation"] == self.sc.operation)

    def _snapshot(self, timeout: float = 15.0) -> None:
        """Remember what node-0 holds before the run (and say what of it concerns this
        scenario): an earlier run's fixes and patterns are not this run's news."""
        http = self._node0()
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    _, patterns = http.request("GET", "/v1/patterns")
                    _, fixes = http.request("GET", "/v1/fixes")
                    break
                except GossipmindError as exc:
                    if time.monotonic() >= deadline:
                        raise GossipmindError(f"node-0's API did not answer: {exc}") from exc
                    time.sleep(self.poll_s)
        finally:
            http.close()
        threshold = self.sc.network_policy().synthesis_threshold
        mine = {p["pattern"]: p for p in patterns if self._mine(p)}
        for p in mine.values():
            if p["reporters"] >= threshold:
                self.before.over_threshold.add(p["pattern"])
                self.emit(
                    "known",
                    f"pattern {p['pattern'][:8]} “{p['template'][:70]}” was over the threshold "
                    f"before this run: {p['count']} failures from {p['reporters']} agents",
                )
        for f in fixes:
            self.before.statuses[f["fix"]] = f["status"]
            self.before.attested.update((f["fix"], a["verifier"]) for a in f["attestations"])
            if f["pattern"] in mine and f["status"] == "accepted":
                self.result.known_before.append(f["fix"])
                self.emit(
                    "known",
                    f"fix {f['fix'][:8]} for this pattern was ACCEPTED before this run "
                    f"(risk {f['risk']}): agents apply it from their first failure",
                )
        if self.result.known_before:
            threading.Timer(1.0, self._learned.set).start()  # late agents need not wait

    def _monitor(self) -> None:
        http = self._node0()
        seen_patterns = set(self.before.over_threshold)
        seen_fixes = dict(self.before.statuses)
        seen_attest = set(self.before.attested)
        threshold = self.sc.network_policy().synthesis_threshold
        try:
            while not self._done.is_set():
                try:
                    _, patterns = http.request("GET", "/v1/patterns")
                    _, fixes = http.request("GET", "/v1/fixes")
                except GossipmindError:
                    time.sleep(self.poll_s)
                    continue
                mine = [p for p in patterns if self._mine(p)]
                for p in mine:
                    if p["pattern"] in seen_patterns:
                        continue
                    if p["reporters"] >= threshold:
                        seen_patterns.add(p["pattern"])
                        self.emit(
                            "threshold",
                            f"pattern {p['pattern'][:8]} “{p['template'][:70]}” crossed "
                            f"the threshold: {p['count']} failures from "
                            f"{p['reporters']} agents",
                        )
                ids = {p["pattern"] for p in mine}
                ours = [f for f in fixes if f["pattern"] in ids]
                for f in ours:
                    self._fix_events(f, seen_fixes, seen_attest)
                with self._lock:
                    self.result.patterns = mine
                    self.result.fixes = ours
                time.sleep(self.poll_s)
        finally:
            http.close()

    def _fix_events(
        self, f: dict[str, Any], seen: dict[str, str], attested: set[tuple[str, str]]
    ) -> None:
        """Events for one fix for the scenario's pattern: its proposal (unless node-0
        held it before the run), new attestations, and status changes."""
        fid = f["fix"]
        steps = " → ".join(s["type"] for s in f["recipe"]["steps"])
        if fid not in seen:
            who = ", ".join(self._names.get(p, p[:8]) for p in f["proposers"])
            d = f.get("drill") or {}
            ok, base = d.get("success_bp", 0) / 100, d.get("baseline_success_bp", 0) / 100
            drill = (
                (
                    f"; drill {ok:.0f}% success vs {base:.0f}% baseline, "
                    f"{d['amplification_pm'] / 1000:.2f}x calls"
                )
                if d
                else ""
            )
            kind = "poison" if fid == self.result.poison_fix else "proposed"
            self.emit(kind, f"fix {fid[:8]} proposed by {who} ({f['origin']}): {steps}{drill}")
        for a in f["attestations"]:
            key = (fid, a["verifier"])
            if key in attested:
                continue
            attested.add(key)
            who = self._names.get(a["verifier"], a["verifier"][:8])
            self.emit(
                "attested",
                f"{who} (tier {a['tier']}) {a['verdict']}s fix {fid[:8]}: "
                f"{'; '.join(a['reasons'])[:90]}",
            )
        if seen.get(fid) != f["status"]:
            seen[fid] = f["status"]
            if f["status"] in ("accepted", "rejected", "blocked", "revoked"):
                self.emit(f["status"], f"fix {fid[:8]} {f['status'].upper()} (risk {f['risk']})")
            if f["status"] == "accepted" and f["pattern"] and not self._learned.is_set():
                self.result.learned_at = self.now()
                threading.Timer(1.0, self._learned.set).start()  # let the SDK caches catch up

    # -- poison -------------------------------------------------------------------------

    def _poison(self) -> None:
        poison = self.sc.poison
        assert poison is not None
        node = str(poison.get("node", "node-1"))
        svc = FaultService(self.sc, "poisoner")
        exc: BaseException | None = None
        for i in range(1000):
            try:
                svc.call(i, customer("poisoner", i), 1)
            except Exception as e:  # noqa: BLE001 - we want the service's first failure
                exc = e
                break
        assert exc is not None
        client = Client(self._dirs[node], stream=False)
        try:
            pattern = client.pattern_of(exc, service=self.sc.service, operation=self.sc.operation)
        finally:
            client.close()
        body = {
            "pattern": pattern.pattern,
            "recipe": poison["recipe"],
            "risk": poison.get("risk", "low"),
            "rationale": str(poison.get("rationale", "")),
            "origin": "synth",
        }
        url, token = discover(self._dirs[node])
        http = Http(url, token, timeout=10)
        try:
            status, doc = http.request(
                "POST", "/v1/ops", {"kind": "fix.propose", "body": encode(body).hex()}
            )
        finally:
            http.close()
        if status != 201:
            raise GossipmindError(f"the poisoner could not propose: {doc}")
        from gossipmind.core.schema import fix_id

        self.result.poison_fix = fix_id(pattern.pattern, poison["recipe"]).hex()

    # -- the run --------------------------------------------------------------------------

    def run(self, *, converge_timeout: float = 30.0) -> RunResult:
        left_out = self.result.left_out_text()
        if left_out is not None:
            self.emit("left out", left_out)
        if self._stopped:
            self.emit(
                "stopped",
                f"{', '.join(self._stopped)} not running: no agent there, no attestation "
                "from there, and its state root is not compared",
            )
        self._snapshot()
        if self.sc.poison is not None:
            self._poison()
        monitor = threading.Thread(target=self._monitor, daemon=True, name="gm-monitor")
        monitor.start()
        giveup = threading.Timer(
            self.learn_timeout, self._learned.set
        )  # late agents never wait forever
        giveup.daemon = True
        giveup.start()
        threads = [
            threading.Thread(target=self._agent, args=(a,), daemon=True, name=a.name)
            for a in self.result.agents.values()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.learn_timeout + 120)
        if self.sc.expect == "fix":  # judged below: give the learning its time (bounded
            # by `giveup`) even when no late agent waited for it (too few hosts)
            self._learned.wait(self.learn_timeout + 10)
        deadline = time.monotonic() + converge_timeout
        while time.monotonic() < deadline:
            self.result.roots = self.tn.roots(self._running)
            if self.result.converged:
                break
            time.sleep(0.5)
        time.sleep(2 * self.poll_s)
        self._done.set()
        monitor.join(10)
        self._learned.set()
        self.result.duration = self.now()
        return self.result
