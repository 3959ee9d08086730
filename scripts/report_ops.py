"""Ops written per failure report, with and without the reporter's hold.

Usage: PYTHONPATH=src python scripts/report_ops.py [--hours H] [--mix soak|outage]
                                                   [--hold-max-ms MS ...]

Replays, on a simulated clock, the load of the one-hour soak of 28 November
(docs/reliability.md, "Soak"): 4 nodes, each taking 1.5 failure reports a
second for 20 s out of every 32 (its agent is then idle for 12 s), drawn from
8 services x 5 operations x 8 message templates (5 % from a service seen once).
Each node's real :class:`~gossipmind.node.reporter.Reporter` batches them with a
2 s window and writes its ops into a list; prints, per ``report_hold_max_ms``,
the ops per report, the ops per hour per node, and the longest time a report
waited to be written. ``--mix outage`` draws instead from one provider's three
failures (a timeout, a 429, a 503 of ``payments``/``charge``): a dense stream
per pattern, as in an outage. Deterministic (seeded).
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import trio

from gossipmind.learn.patterns import Failure
from gossipmind.node.reporter import Reporter

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


def run(hours: float, hold_max_ms: int, mix: str = "soak") -> dict[str, Any]:
    clock = [0]
    reports, waits = 0, [0]
    ops: list[int] = []
    taken: dict[bytes, list[int]] = {}  # pattern -> times of its reports not written

    async def write(kind: str, body: dict[str, Any]) -> None:
        ops.append(clock[0])
        for t in taken.pop(body["pattern"], []):
            waits[0] = max(waits[0], clock[0] - t)

    reporters = [
        Reporter(write, lambda: clock[0], window_ms=WINDOW_MS, hold_max_ms=hold_max_ms)
        for _ in range(NODES)
    ]
    rnds = [random.Random(f"node-{i}") for i in range(NODES)]
    step = int(1000 / RATE)

    async def main() -> None:
        nonlocal reports
        end = int(hours * 3_600_000)
        while clock[0] < end:
            clock[0] += step
            if (clock[0] // 1000) % 32 < 20:  # the agents' duty cycle
                for r, rnd in zip(reporters, rnds, strict=True):
                    reduced = r.failure(_failure(rnd, mix))
                    taken.setdefault(reduced.pattern, []).append(clock[0])
                    reports += 1
            if clock[0] % WINDOW_MS < step:
                for r in reporters:
                    await r.flush()

    trio.run(main)
    return {
        "mix": mix,
        "hold_max_ms": hold_max_ms,
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
    args = parser.parse_args()
    for hold in args.hold_max_ms:
        print(run(args.hours, hold, args.mix))


if __name__ == "__main__":
    main()
