"""A soak: a testnet under SDK agents and disruptions; what grows, what converges,
what is counted once.

Usage: PYTHONPATH=src python scripts/soak.py [--minutes 30] [--nodes 4]
           [--disrupt-every 240] [--interval 0.8] [--run-dir DIR] [--json]

Starts ``--nodes`` node processes (``testnet up``, one verifier, payments low
risk as in ``gossipmind demo``, every other setting the default) under
``--run-dir`` (default: a new temporary dir, removed at the end), and one agent
per non-verifier node: a thread with the real SDK (``Client``,
``@client.resilient``) calling, in turn, the fault-injecting services of four
scenarios (testnet/scenarios/): a search API answering 429 with Retry-After,
payments that time out, a schema drift no retry can help, and an inventory
service failing 3 % of calls that is down altogether (every attempt 503) for
four minutes at a third of the run.

Every ``--disrupt-every`` seconds, in turn: SIGKILL and restart of a member
node; a partition of the nodes into two halves for 60 s, then heal; a clean
stop and start of a member node; SIGKILL of the verifier, started again 20 s
later. Every 30 s it samples each process (RSS, open files) and each node
(``/v1/status``: ops, pending, journaled and held reports) into
``soak.jsonl`` in the run dir.

At the end the agents stop and send what they queued; the nodes must reach one
state root; then ``testnet down`` (a clean stop writes every held report) and
every node is started again, to reach one root again. Then the check that
matters: the fleet's count of the schema drift's failures (a pattern no fix
can help, so each failed call is one report) must equal the failed drift calls
the agents saw — nothing lost across the kills, stops and partitions, nothing
counted twice. Exits 0 when every root agreed and the counts are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gossipmind.api.client import Client
from gossipmind.api.transport import Http, discover
from gossipmind.core.policy import Policy
from gossipmind.testnet.launcher import Testnet
from gossipmind.testnet.scenario import Fault, FaultService, Scenario, ServiceError, load

SAMPLE_S = 30.0
OUTAGE_S = 240.0
PARTITION_S = 60.0


@dataclass
class Tally:
    calls: int = 0
    failed: int = 0
    by_phase: dict[str, list[int]] = field(default_factory=dict)  # phase -> [calls, failed]


class Outage(FaultService):
    """A service whose every attempt fails with a 503 while ``down()`` says so."""

    def __init__(self, sc: Scenario, agent: str, down: threading.Event) -> None:
        super().__init__(sc, agent)
        self.is_down = down

    def call(
        self, i: int, customer: str, amount: int, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        if self.is_down.is_set():
            self.attempts[i] = self.attempts.get(i, 0) + 1
            raise ServiceError(f"503 Service Unavailable: inventory for {customer}", 503)
        return super().call(i, customer, amount, idempotency_key)


def services() -> list[Scenario]:
    search = load("rate-limited-search-api")
    payments = load("flaky-payments")
    drift = load("schema-drift")
    inventory = replace(
        search,
        name="inventory",
        service="inventory",
        operation="reserve",
        failure_rate=0.03,
        faults=(Fault("server_error", 1, "503 Service Unavailable: inventory for {customer}"),),
        seed=17,
    )
    return [search, payments, drift, inventory]


class Soak:
    def __init__(self, args: argparse.Namespace, run_dir: Path) -> None:
        self.args = args
        self.tn = Testnet(run_dir)
        self.out = run_dir / "soak.jsonl"
        self.stop = threading.Event()
        self.outage = threading.Event()
        self.t0 = time.monotonic()
        self.tallies: dict[str, dict[str, Tally]] = {}
        self.clients: dict[str, dict[str, Any]] = {}
        self.log: list[str] = []
        self.lock = threading.Lock()

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s] {text}"
        self.log.append(line)
        print(line, file=sys.stderr, flush=True)

    def phase(self) -> str:
        third = self.args.minutes * 60 / 3
        return ("first", "middle", "last")[min(2, int((time.monotonic() - self.t0) // third))]

    # -- agents ------------------------------------------------------------------

    def agent(self, node: str, directory: Path) -> None:
        client = Client(directory)
        tallies = self.tallies.setdefault(node, {})
        try:
            client.wait_ready(30)
            calls = []
            for sc in services():
                svc = (
                    Outage(sc, node, self.outage)
                    if sc.service == "inventory"
                    else FaultService(sc, node)
                )
                wrap = client.resilient(
                    service=sc.service, operation=sc.operation, idempotent=sc.idempotent
                )
                calls.append((sc.service, wrap(svc.call)))
                tallies[sc.service] = Tally()
            i = 0
            while not self.stop.is_set():
                for name, call in calls:
                    ok = True
                    try:
                        call(i, f"{node}.customer{i}@example.com", 1000 + i)
                    except Exception:  # noqa: BLE001 - the agent's call failed for good
                        ok = False
                    with self.lock:
                        t = tallies[name]
                        t.calls += 1
                        t.failed += 0 if ok else 1
                        p = t.by_phase.setdefault(self.phase(), [0, 0])
                        p[0] += 1
                        p[1] += 0 if ok else 1
                    if self.stop.wait(self.args.interval / len(calls)):
                        break
                i += 1
        finally:
            client.close()
            s = client.stats
            self.clients[node] = {
                "sent": s.reports_sent,
                "queued": s.reports_queued,
                "refused": s.reports_refused,
                "unconfirmed": s.reports_unconfirmed,
                "resent": s.reports_resent,
                "left_in_queue": len(client.outbox.items),
                "recoveries": s.recoveries,
                "fixes_applied": s.fixes_applied,
            }

    # -- sampling ----------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        st = self.tn.state()
        row: dict[str, Any] = {"t": round(time.monotonic() - self.t0, 1), "procs": {}, "nodes": {}}
        for p in st.procs.values():
            if p.pid is None or not self.tn.alive(p):
                continue
            try:
                status = Path(f"/proc/{p.pid}/status").read_text()
                rss = next(int(ln.split()[1]) for ln in status.splitlines() if ln[:6] == "VmRSS:")
                fds = len(os.listdir(f"/proc/{p.pid}/fd"))
            except (OSError, StopIteration):
                continue
            row["procs"][p.id] = {"rss_kib": rss, "fds": fds}
        for n in st.nodes:
            if n.spare or not self.tn.running(n.name):
                continue
            try:
                url, token = discover(Path(n.dir))
                http = Http(url, token, timeout=5)
                try:
                    _, s = http.request("GET", "/v1/status")
                finally:
                    http.close()
            except Exception as exc:  # noqa: BLE001 - a node restarting: say so, go on
                row["nodes"][n.name] = {"error": str(exc)[:120]}
                continue
            rep = s.get("reports", {})
            row["nodes"][n.name] = {
                "ops": s["ops"],
                "pending": s["pending"],
                "peers": len(s["peers"]),
                "journaled": rep.get("journaled"),
                "held": rep.get("held"),
                "db_bytes": (Path(n.dir) / "kb.sqlite3").stat().st_size
                if (Path(n.dir) / "kb.sqlite3").exists()
                else None,
            }
        with self.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        return row

    # -- disruptions -------------------------------------------------------------

    def disrupt(self, k: int, members: list[str], verifier: str, names: list[str]) -> None:
        step = k % 4
        if step == 0:
            target = members[k // 4 % len(members)]
            self.tn.kill(target)
            self.say(f"SIGKILL {target}")
            time.sleep(5)
            self.tn.start(target)
            self.say(f"started {target} again")
        elif step == 1:
            half = len(names) // 2
            self.tn.partition([names[:half], names[half:]])
            self.say(f"partition {names[:half]} | {names[half:]}")
            self.stop.wait(PARTITION_S)
            self.tn.heal()
            self.say("healed")
        elif step == 2:
            target = members[(k // 4 + 1) % len(members)]
            self.tn.stop(target)
            self.say(f"stopped {target} (SIGTERM)")
            time.sleep(5)
            self.tn.start(target)
            self.say(f"started {target} again")
        else:
            self.tn.kill(verifier)
            self.say(f"SIGKILL {verifier} (the verifier)")
            self.stop.wait(20)
            self.tn.start(verifier)
            self.say(f"started {verifier} again")

    def converge(self, timeout: float) -> dict[str, str | None]:
        deadline = time.monotonic() + timeout
        while True:
            roots = self.tn.roots()
            if len(set(roots.values())) == 1 and None not in roots.values():
                return roots
            if time.monotonic() >= deadline:
                return roots
            time.sleep(2)

    def fleet(self) -> tuple[dict[str, int], list[dict[str, Any]]]:
        url, token = discover(Path(self.tn.node("node-0").dir))
        http = Http(url, token, timeout=10)
        try:
            _, patterns = http.request("GET", "/v1/patterns")
            _, fixes = http.request("GET", "/v1/fixes")
        finally:
            http.close()
        counts: dict[str, int] = {}
        for p in patterns:
            counts[p["service"]] = counts.get(p["service"], 0) + int(p["count"])
        return counts, fixes

    # -- the run -----------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        a = self.args
        policy = Policy.from_body({**Policy().to_body(), "scope_risk": {}})
        self.say(f"testnet up: {a.nodes} nodes, 1 verifier, in {self.tn.run_dir}")
        self.tn.up(a.nodes, 1, policy=policy)
        st = self.tn.state()
        names = [n.name for n in st.nodes if not n.spare]
        verifier = next(n.name for n in st.nodes if n.role == "verifier")
        members = [n.name for n in st.nodes if n.role != "verifier" and n.name != "node-0"]
        agents = [
            threading.Thread(target=self.agent, args=(n.name, Path(n.dir)), daemon=True)
            for n in st.nodes
            if n.role != "verifier" and not n.spare
        ]
        for t in agents:
            t.start()
        end = self.t0 + a.minutes * 60
        outage_at = self.t0 + a.minutes * 60 / 3
        outage_s = min(OUTAGE_S, a.minutes * 60 / 6)  # (a short run: a sixth of it)
        next_sample, next_disrupt, k = time.monotonic(), self.t0 + a.disrupt_every, 0
        first = self.sample()
        while time.monotonic() < end:
            now = time.monotonic()
            if not self.outage.is_set() and outage_at <= now < outage_at + outage_s:
                self.outage.set()
                self.say("inventory is down (every attempt 503)")
            elif self.outage.is_set() and now >= outage_at + outage_s:
                self.outage.clear()
                self.say("inventory is back")
            if now >= next_sample:
                self.sample()
                next_sample = now + SAMPLE_S
            if now >= next_disrupt and now < end - 120:  # the last 2 minutes: calm
                self.disrupt(k, members, verifier, names)
                k, next_disrupt = k + 1, time.monotonic() + a.disrupt_every
            time.sleep(1)
        self.outage.clear()
        self.stop.set()
        for t in agents:
            t.join(60)
        self.say("agents stopped; waiting for one root")
        last = self.sample()
        live_roots = self.converge(180)
        self.say("testnet down (writes every held report), then every node up again")
        self.tn.down()
        for name in names:
            self.tn.start(name)
        again_roots = self.converge(180)
        counts, fixes = self.fleet()
        self.tn.down()
        drift_failed = sum(t["crm"].failed for t in self.tallies.values() if "crm" in t)
        result = {
            "minutes": a.minutes,
            "nodes": a.nodes,
            "one_root_live": len(set(live_roots.values())) == 1,
            "one_root_after_restart": len(set(again_roots.values())) == 1,
            "ops": last["nodes"],
            "rss_first_kib": {p: v["rss_kib"] for p, v in first["procs"].items()},
            "rss_last_kib": {p: v["rss_kib"] for p, v in last["procs"].items()},
            "reports_counted": counts,
            "drift_failed_calls": drift_failed,
            "drift_counted": counts.get("crm", 0),
            "agents": {
                n: {s: [t.calls, t.failed, t.by_phase] for s, t in ts.items()}
                for n, ts in self.tallies.items()
            },
            "clients": self.clients,
            "fixes": [{k: f.get(k) for k in ("fix", "scope", "status", "risk")} for f in fixes],
            "events": self.log,
        }
        result["exactly_once"] = result["drift_counted"] == drift_failed
        return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--disrupt-every", type=float, default=240.0)
    ap.add_argument("--interval", type=float, default=0.8, help="seconds per round of calls")
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    a = ap.parse_args()
    if a.minutes <= 0 or a.nodes < 3 or a.disrupt_every <= 0 or a.interval <= 0:
        ap.error("--minutes, --disrupt-every and --interval must be > 0, --nodes at least 3")
    tmp = None if a.run_dir else tempfile.TemporaryDirectory(prefix="gm-soak-")
    run_dir = a.run_dir or Path(tmp.name if tmp else ".")
    soak = Soak(a, run_dir)
    try:
        result = soak.run()
    finally:
        if soak.tn.exists():
            soak.tn.down()
        if tmp is not None:
            tmp.cleanup()
    if a.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        for key in ("one_root_live", "one_root_after_restart", "exactly_once"):
            print(f"{key:24} {result[key]}")
        print(
            f"{'drift failed / counted':24} {result['drift_failed_calls']} / "
            f"{result['drift_counted']}"
        )
        print(f"{'reports counted':24} {result['reports_counted']}")
        print(f"{'rss first (KiB)':24} {result['rss_first_kib']}")
        print(f"{'rss last (KiB)':24} {result['rss_last_kib']}")
        print(f"{'ops at the end':24} { {n: v.get('ops') for n, v in result['ops'].items()} }")
        for f in result["fixes"]:
            print(f"fix {str(f['fix'])[:12]} {f['scope']:24} {f['status']:10} {f['risk']}")
        for n, c in result["clients"].items():
            print(f"client {n}: {c}")
        for n, ts in result["agents"].items():
            for s, (calls, failed, phases) in ts.items():
                print(f"agent {n} {s:10} calls {calls:5} failed {failed:4} by third {phases}")
    ok = result["one_root_live"] and result["one_root_after_restart"] and result["exactly_once"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
