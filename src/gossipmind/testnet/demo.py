"""`gossipmind demo`: a local testnet learns a fix, told in numbers.

Starts a testnet (node processes on 127.0.0.1), runs a scenario with simulated
agents, prints the story live, ends with a summary table and an HTML report,
and stops every process it started.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gossipmind.testnet.launcher import Testnet
from gossipmind.testnet.procs import lingers
from gossipmind.testnet.report import html_report, summary
from gossipmind.testnet.run import Event, Runner, RunResult
from gossipmind.testnet.scenario import Scenario

STYLE = {
    "threshold": "yellow",
    "proposed": "cyan",
    "attested": "cyan",
    "accepted": "bold green",
    "late": "blue",
    "recovery": "bold magenta",
    "poison": "bold red",
    "rejected": "red",
    "blocked": "red",
    "revoked": "red",
    "known": "dim",
}


@dataclass
class DemoOutcome:
    result: RunResult
    summary: dict[str, Any]
    report: Path | None
    leftover_pids: list[int]


def _progress(console: Console, runner: Runner, stop: threading.Event) -> None:
    while not stop.wait(2.0):
        r = runner.result
        now = runner.now()
        recent = [c for c in list(r.calls) if c.t >= now - 3]
        rate = sum(not c.ok for c in recent) / len(recent) if recent else 0.0
        console.print(
            f"[dim]{now:6.1f}s  {len(r.calls):4d} calls · fleet error rate (last 3 s) "
            f"{rate * 100:5.1f}% · recoveries {sum(a.recoveries for a in r.agents.values())}[/]"
        )


def show_summary(console: Console, s: dict[str, Any], result: RunResult) -> None:
    t = Table(title=escape(f"{s['scenario']}: summary"), title_justify="left")
    for col in (
        "agent",
        "node",
        "calls",
        "failed",
        "error before",
        "error after",
        "recovered by a fix",
    ):
        t.add_column(col)
    for a in s["agents"]:
        t.add_row(
            Text(a["agent"] + (" (late)" if a["late"] else "")),
            Text(a["node"]),
            str(a["calls"]),
            str(a["failed"]),
            _pct(a["before"]),
            _pct(a["after"]),
            str(a["recoveries"]),
        )
    console.print(t)
    if s.get("agents_left_out_note"):
        console.print(f"[yellow]{escape(s['agents_left_out_note'])}[/]")
    f = s["first"]
    console.print(
        f"pattern over threshold at {_t(f['threshold'])} · first proposal {_t(f['proposed'])} · "
        f"accepted {_t(f['accepted'])} · first autonomous recovery {_t(f['recovery'])}"
    )
    if s["expect"] == "fix" and s["learned_at_s"] is None and s["known_before"]:
        console.print(
            f"[bold]a fix for this pattern was accepted before this run "
            f"({escape(', '.join(f[:8] for f in s['known_before']))}): fleet error rate "
            f"{_pct(s['fleet_error_before'])} over the run[/]"
        )
    elif s["expect"] == "fix":
        console.print(
            f"[bold]fleet error rate {_pct(s['fleet_error_before'])} before the fleet learned → "
            f"{_pct(s['fleet_error_after'])} after[/]"
        )
    else:
        console.print(
            f"[bold]accepted fixes for the pattern: {len(s['accepted_fixes'])} (expected none)[/]"
        )
    if s["poison_fix"]:
        console.print(escape(f"poisoned fix {s['poison_fix'][:12]}: {s['poison_status']}"))
    console.print(
        "every node on one state root" if s["converged"] else "[red]state roots differ[/]"
    )


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _t(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}s"


def run_demo(
    sc: Scenario,
    *,
    console: Console,
    run_dir: Path | None = None,
    report: Path | None = Path("gossipmind-report.html"),
    per_process: int = 2,
    keep: bool = False,
) -> DemoOutcome:
    root = run_dir or Path(tempfile.mkdtemp(prefix="gossipmind-demo-"))
    tn = Testnet(root)
    console.print(f"[bold]gossipmind demo — {escape(sc.name)}[/]")
    console.print(escape(sc.description.strip()))
    console.print(
        f"\nstarting a local testnet: {sc.nodes} nodes ({sc.verifiers} verifiers) in "
        f"{-(-sc.nodes // per_process)} processes under {escape(str(root))} …"
    )
    t0 = time.monotonic()
    started: list[int] = []
    try:
        tn.up(
            sc.nodes,
            sc.verifiers,
            per_process=per_process,
            settings=dict(sc.settings),
            policy=sc.network_policy(),
            status_every=1.0,
        )
        started = tn.pids()
        console.print(
            f"testnet up in {time.monotonic() - t0:.1f}s: "
            + escape(", ".join(f"{n['name']} ({n['role']})" for n in tn.status()))
        )
        target = escape(f"{sc.service}/{sc.operation}")
        console.print(
            f"agents: {sc.agents} meet the failures first, {sc.late_agents} start only after "
            f"the fleet learned · {sc.calls} calls each to {target}\n"
        )

        def on_event(e: Event) -> None:
            style = STYLE.get(e.kind, "")
            text = escape(e.text)
            console.print(
                f"{e.t:6.1f}s  [{style}]{text}[/{style}]" if style else f"{e.t:6.1f}s  {text}"
            )

        runner = Runner(tn, sc, on_event=on_event)
        stop = threading.Event()
        ticker = threading.Thread(target=_progress, args=(console, runner, stop), daemon=True)
        ticker.start()
        try:
            result = runner.run()
        finally:
            stop.set()
            ticker.join(5)
    finally:
        leftover: list[int] = []
        if not keep:
            tn.down(purge=run_dir is None)
            leftover = [p for p in started if lingers(p)]
    s = summary(result)
    s["pids"] = started
    console.print()
    show_summary(console, s, result)
    if report is not None:
        report.write_text(html_report(result))
        (report.with_suffix(".json")).write_text(json.dumps(s, indent=2) + "\n")
        console.print(f"report: {escape(str(report.resolve()))}")
    if keep:
        console.print(
            escape(
                f"testnet still running under {root} "
                f"(stop it: gossipmind testnet down --run-dir {root})"
            )
        )
    else:
        console.print(
            f"stopped every process it started ({len(started)}); left running: {len(leftover)}"
        )
    return DemoOutcome(result, s, report, leftover)
