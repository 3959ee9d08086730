"""Chaos: a testnet under a seeded schedule of faults while agents write.

For ``duration`` seconds, while writers keep writing ops through the nodes'
local APIs (an op is *acknowledged* when the API answers 201: it is committed
to that node's store), a seeded schedule SIGKILLs nodes and restarts them,
partitions the testnet and heals it, and makes links lossy and slow. Then every
fault is lifted and the run checks that every state root is equal and every
acknowledged op is present on every node.

Faults are application-level (partitions: each node refuses the other side's
peers; lossy/slow links: incoming gossip dropped/delayed in the node). Real link
faults need ``tc netem``, which this kernel does not offer (see docs/reliability.md).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossipmind.api.transport import Http, discover
from gossipmind.core.encoding import encode
from gossipmind.core.errors import GossipmindError, NetworkError
from gossipmind.testing.kb import sample_report
from gossipmind.testnet.launcher import Testnet

MODE = "application-level partitions and lossy/slow links (tc netem is not available here)"


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

    @property
    def ok(self) -> bool:
        return self.converged and not any(self.missing.values())

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
    ) -> None:
        self.tn = tn
        self.duration = duration
        self.rng = random.Random(seed)
        self.result = ChaosResult(seed, duration)
        self.writers = writers
        self.write_interval = write_interval
        self.on_action = on_action or (lambda t, a: None)
        self.names = [n.name for n in tn.state().nodes if not n.spare]
        self.dirs = {n.name: Path(n.dir) for n in tn.state().nodes}
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
        down: dict[str, float] = {}  # node -> when to restart
        faulty: dict[str, float] = {}  # node -> when to clear link faults
        healed_at: float | None = None
        while self.now() < self.duration:
            now = self.now()
            for name, when in list(down.items()):
                if now >= when:
                    del down[name]
                    self._restart(name)
            for name, when in list(faulty.items()):
                if now >= when:
                    self.tn.link_faults([name])
                    del faulty[name]
                    self.act(f"clear link faults on {name}")
            if healed_at is not None and now >= healed_at:
                self.tn.heal()
                healed_at = None
                self.act("heal")
            roll = self.rng.random()
            alive = [n for n in self.names if n not in down]
            if roll < 0.35 and len(down) < len(self.names) // 3 and len(alive) > 2:
                victim = self.rng.choice(alive)
                self.tn.kill(victim)
                down[victim] = now + self.rng.uniform(3, 8)
                self.result.kills += 1
                self.act(f"SIGKILL {victim}")
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
        # lift everything
        self.tn.heal()
        self.tn.link_faults(self.names)
        for name in down:
            self._restart(name)
        self.act("all faults lifted")

    def _restart(self, name: str) -> None:
        try:
            self.tn.start(name, timeout=15)
            self.act(f"restart {name}")
        except NetworkError:  # started, but partitioned from every peer: it joins at heal
            self.act(f"restart {name} (no reachable peer yet)")

    def run(self, *, converge_timeout: float = 90.0) -> ChaosResult:
        threads = [
            threading.Thread(target=self._writer, args=(k,), daemon=True)
            for k in range(self.writers)
        ]
        for t in threads:
            t.start()
        try:
            self._schedule()
        finally:
            self._stop.set()
            for t in threads:
                t.join(10)
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
