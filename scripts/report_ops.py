"""Ops written per failure report, with and without the reporter's hold.

Usage: PYTHONPATH=src python scripts/report_ops.py [--hours H] [--mix soak|outage]
                                                   [--hold-max-ms MS ...]
                                                   [--restart-every MIN [--restart kill|stop]]

Replays, on a simulated clock, the load of the one-hour soak of 28 November
(docs/reliability.md, "Soak"): 4 nodes, each taking 1.5 failure reports a
second for 20 s out of every 32 (its agent is then idle for 12 s), drawn from
8 services x 5 operations x 8 message templates (5 % from a service seen once).
Each node's real :class:`~gossipmind.node.reporter.Reporter` batches them with a
2 s window and writes its ops into a list; prints, per ``report_hold_max_ms``,
the ops per report, the ops per hour per node, and the longest time a report
waited to be written. ``--mix outage`` draws instead from one provider's three
failures (a timeout, a 429, a 503 of ``payments``/``charge``): a dense stream
per pattern, as in an outage. ``--restart-every`` restarts every node every MIN
minutes (staggered): ``kill`` as a SIGKILL (its unwritten reports come back, as
from its journal), ``stop`` a clean stop (it writes what it holds); each is run
twice, its new reporter's holds rebuilt from its own ops (node/reportstart.py)
and not (``resume: false``: before that was done). Deterministic (seeded).
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import trio

from gossipmind.core import encoding
from gossipmind.learn.patterns import Failure, Reduced
from gossipmind.node.reporter import Reporter
from gossipmind.node.reportparts import failure_data
from gossipmind.node.reportstart import own_writes, resume

SERVICES = ["search", "geo", "weather", "inventory", "email", "translate", "billing", "crm"]
OPS = ["get", "list", "put", "query", "send"]
TEMPLATES = [
    ("TimeoutError", "request to {s} timed out after {n} ms"),
    ("ConnectionResetError", "connection reset by peer while calling {s}/{o}"),
    ("RuntimeError", "HTTP 429 Too Many Requests: retry after {n} s"),
    ("RuntimeError", "HTTP 503 Service Unavailable from {s}"),
    ("ValueError", "field 'item_{n}' missing in {s} response"),
    ("KeyError", "unknown id {n}"),
    ("ConnectionRefusedError", "connect ECONNREFUSED 10.0.{n}.1:443"),
    ("RuntimeError", "HTTP 502 Bad Gateway upstream {s}-{n}"),
]
NODES, RATE, WINDOW_MS = 4, 1.5, 2_000


def _failure(rnd: random.Random, mix: str = "soak") -> Failure:
    if mix == "outage":
        exc, tpl = rnd.choice([TEMPLATES[0], TEMPLATES[2], TEMPLATES[3]])
        n = rnd.randrange(1, 5000)
        return Failure("payments", "charge", exc, tpl.format(s="payments", o="charge", n=n))
    s, o = rnd.choice(SERVICES), rnd.choice(OPS)
    if rnd.random() < 0.05:
        s = f"svc{rnd.randrange(10**6)}"
    exc, tpl = rnd.choice(TEMPLATES)
    return Failure(s, o, exc, tpl.format(s=s, o=o, n=rnd.randrange(1, 5000)))


def run(
    hours: float,
    hold_max_ms: int,
    mix: str = "soak",
    restart_every_min: float = 0,
    restart: str = "kill",
    resumed: bool = True,
) -> dict[str, Any]:
    clock = [0]
    reports, waits = 0, [0]
    ops: list[int] = []
    taken: dict[bytes, list[int]] = {}  # pattern -> times of its reports not written
    own: list[list[tuple[str, int, Any]]] = [[] for _ in range(NODES)]  # (kind, ts, body)
    unwritten: list[dict[bytes, list[tuple[Reduced, int]]]] = [{} for _ in range(NODES)]

    def wrote(i: int, body: dict[str, Any], ts: int) -> None:
        ops.append(ts)
        own[i].append(("pattern.report", ts, body))  # (its ts: when its window closed)
        unwritten[i].pop(body["pattern"], None)
        for t in taken.pop(body["pattern"], []):
            waits[0] = max(waits[0], clock[0] - t)

    def reporter(i: int) -> Reporter:
        async def write(kind: str, body: dict[str, Any]) -> None:
            wrote(i, body, clock[0])

        return Reporter(write, lambda: clock[0], window_ms=WINDOW_MS, hold_max_ms=hold_max_ms)

    def restarted(i: int, old: Reporter) -> Reporter:
        if restart == "stop":

            def commit(requests: list[tuple[str, dict[str, Any], int]]) -> list[object]:
                for _, body, ts in requests:
                    wrote(i, body, ts)
                return [None] * len(requests)

            old.flush_into(commit)
        new = reporter(i)
        new.recover(  # (a kill: what its journal held)
            [
                (bytes(16), False, "pattern.report", ts, encoding.encode(failure_data(r)))
                for held in unwritten[i].values()
                for r, ts in held
            ]
        )
        if resumed:
            recent = [op for op in own[i] if op[1] >= clock[0] - 3 * hold_max_ms]
            writes = own_writes(recent)
            resume(new, writes["pattern.report"], writes["fix.outcome"], clock[0])
        return new

    reporters = [reporter(i) for i in range(NODES)]
    rnds = [random.Random(f"node-{i}") for i in range(NODES)]
    step = int(1000 / RATE)
    every = int(restart_every_min * 60_000)

    async def main() -> None:
        nonlocal reports
        end = int(hours * 3_600_000)
        while clock[0] < end:
            clock[0] += step
            for i in range(NODES if every else 0):  # (staggered: node i at i/NODES of it)
                if (clock[0] - i * every // NODES) % every < step and clock[0] > every // 2:
                    reporters[i] = restarted(i, reporters[i])
            if (clock[0] // 1000) % 32 < 20:  # the agents' duty cycle
                for i, (r, rnd) in enumerate(zip(reporters, rnds, strict=True)):
                    reduced = r.failure(_failure(rnd, mix))
                    taken.setdefault(reduced.pattern, []).append(clock[0])
                    unwritten[i].setdefault(reduced.pattern, []).append((reduced, clock[0]))
                    reports += 1
            if clock[0] % WINDOW_MS < step:
                for r in reporters:
                    await r.flush()

    trio.run(main)
    restarts = {"restart_every_min": restart_every_min, restart: True, "resume": resumed}
    return {
        "mix": mix,
        "hold_max_ms": hold_max_ms,
        **(restarts if every else {}),
        "reports": reports,
        "ops": len(ops),
        "ops_per_report": round(len(ops) / max(reports, 1), 3),
        "ops_per_hour_per_node": round(len(ops) / hours / NODES),
        "longest_wait_s": waits[0] / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--mix", choices=["soak", "outage"], default="soak")
    parser.add_argument("--hold-max-ms", type=int, nargs="*", default=[0, 60_000, 600_000])
    parser.add_argument("--restart-every", type=float, default=0, metavar="MIN")
    parser.add_argument("--restart", choices=["kill", "stop"], default="kill")
    args = parser.parse_args()
    for hold in args.hold_max_ms:
        for resumed in (True, False) if args.restart_every else (True,):
            print(run(args.hours, hold, args.mix, args.restart_every, args.restart, resumed))


if __name__ == "__main__":
    main()
