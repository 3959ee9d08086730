"""The demo's numbers: error rates over time, the summary, and a self-contained HTML report."""

from __future__ import annotations

import html
import math
from typing import Any

from gossipmind.testnet.run import RunResult

COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#dc2626", "#4b5563", "#db2777"]
MARKS = {
    "threshold": "#6b7280",
    "proposed": "#d97706",
    "accepted": "#16a34a",
    "late": "#2563eb",
    "recovery": "#9333ea",
    "poison": "#dc2626",
    "rejected": "#dc2626",
    "blocked": "#dc2626",
}


def series(
    result: RunResult, agent: str | None = None, window: float = 3.0, step: float = 1.0
) -> list[tuple[float, float | None]]:
    """(t, error rate over the trailing ``window`` seconds) every ``step`` seconds."""
    end = max((c.t for c in result.calls), default=0.0)
    out: list[tuple[float, float | None]] = []
    t = step
    while t <= end + step:
        sel = [
            c for c in result.calls if t - window <= c.t < t and (agent is None or c.agent == agent)
        ]
        out.append((t, sum(not c.ok for c in sel) / len(sel) if sel else None))
        t += step
    return out


def summary(result: RunResult) -> dict[str, Any]:
    learned = result.learned_at
    before = result.error_rate(until=learned) if learned else result.error_rate()
    after = result.error_rate(since=learned + 1.0) if learned else None
    agents = []
    for a in result.agents.values():
        agents.append(
            {
                "agent": a.name,
                "node": a.node,
                "late": a.late,
                "calls": a.calls,
                "failed": a.failed,
                "error_rate": round(a.failed / a.calls, 4) if a.calls else 0.0,
                "before": round(result.error_rate(until=learned, agent=a.name), 4)
                if learned
                else None,
                "after": round(result.error_rate(since=learned + 1.0, agent=a.name), 4)
                if learned
                else None,
                "recoveries": a.recoveries,
            }
        )
    first = {
        k: (e.t if (e := result.first(k)) else None)
        for k in ("threshold", "proposed", "accepted", "late", "recovery")
    }
    return {
        "scenario": result.scenario.name,
        "expect": result.scenario.expect,
        "duration_s": result.duration,
        "calls": len(result.calls),
        "fleet_error_before": round(before, 4),
        "fleet_error_after": round(after, 4) if after is not None else None,
        "reduction": round(1 - after / before, 4) if after is not None and before else None,
        "learned_at_s": learned,
        "first": first,
        "accepted_fixes": [f["fix"] for f in result.accepted],
        "known_before": list(result.known_before),
        "fixes": [
            {"fix": f["fix"], "status": f["status"], "risk": f["risk"]} for f in result.fixes
        ],
        "poison_fix": result.poison_fix,
        "poison_status": next(
            (f["status"] for f in result.fixes if f["fix"] == result.poison_fix), None
        ),
        "converged": result.converged,
        "roots": result.roots,
        "agents": agents,
        "agents_left_out": result.left_out,
        "agents_left_out_note": result.left_out_text(),
    }


def _svg(result: RunResult, width: int = 860, height: int = 300) -> str:
    pad_l, pad_r, pad_t, pad_b = 48, 150, 16, 36
    fleet = series(result)
    end = max((t for t, _ in fleet), default=1.0)

    def x(t: float) -> float:
        return pad_l + (width - pad_l - pad_r) * t / max(end, 1.0)

    def y(r: float) -> float:
        return pad_t + (height - pad_t - pad_b) * (1 - r)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">'
    ]
    for r in (0, 0.25, 0.5, 0.75, 1.0):
        yy = f"{y(r):.1f}"
        parts.append(
            f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{yy}" y2="{yy}" stroke="#e5e7eb"/>'
        )
        parts.append(
            f'<text x="{pad_l - 6}" y="{y(r) + 4:.1f}" text-anchor="end">{int(r * 100)}%</text>'
        )
    for s in range(0, int(end) + 1, max(1, math.ceil(end / 10))):
        parts.append(
            f'<text x="{x(s):.1f}" y="{height - pad_b + 16}" text-anchor="middle">{s}s</text>'
        )
    for e in result.events:
        if e.kind in ("threshold", "accepted", "late", "recovery", "poison") and e.t <= end:
            c = MARKS[e.kind]
            parts.append(
                f'<line x1="{x(e.t):.1f}" x2="{x(e.t):.1f}" y1="{pad_t}" y2="{height - pad_b}" '
                f'stroke="{c}" stroke-dasharray="4 3"><title>{html.escape(e.text)}</title></line>'
            )

    def line(
        points: list[tuple[float, float | None]], color: str, w: float, label: str, row: int
    ) -> None:
        known = [(t, r) for t, r in points if r is not None]
        d = " ".join(
            f"{'M' if i == 0 else 'L'}{x(t):.1f},{y(r):.1f}" for i, (t, r) in enumerate(known)
        )
        if d:
            parts.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="{w}"/>')
        ly = pad_t + 14 * row + 6
        parts.append(
            f'<line x1="{width - pad_r + 10}" x2="{width - pad_r + 28}" y1="{ly}" y2="{ly}" '
            f'stroke="{color}" stroke-width="{w}"/>'
        )
        parts.append(f'<text x="{width - pad_r + 32}" y="{ly + 4}">{html.escape(label)}</text>')

    for i, a in enumerate(result.agents):
        line(series(result, a), COLORS[i % len(COLORS)], 1.2, a, i + 1)
    line(fleet, "#111827", 3, "fleet", 0)
    parts.append(
        f'<text x="{pad_l}" y="{height - 4}">error rate over the last 3 s · dashed: '
        f"threshold (grey), accepted (green), late agent starts (blue), recovery (purple)</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def html_report(result: RunResult) -> str:
    s = summary(result)
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(a['agent'])}{' (late)' if a['late'] else ''}</td><td>{a['node']}</td>"
        f"<td>{a['calls']}</td><td>{a['failed']}</td><td>{_pct(a['before'])}</td>"
        f"<td>{_pct(a['after'])}</td><td>{a['recoveries']}</td></tr>"
        for a in s["agents"]
    )
    events = "".join(
        f"<tr><td>{e.t:.1f}s</td><td>{esc(e.kind)}</td><td>{esc(e.text)}</td></tr>"
        for e in result.events
    )
    fixes = "".join(
        f"<tr><td><code>{f['fix'][:12]}</code></td><td>{esc(f['status'])}</td><td>{esc(f['risk'])}</td>"
        f"<td>{esc(' → '.join(st['type'] for st in f['recipe']['steps']))}</td>"
        f"<td>{esc(f['rationale'][:160])}</td></tr>"
        for f in result.fixes
    )
    verdict = _verdict(s)
    roots = ", ".join(f"{k}={(v or '-')[:12]}" for k, v in s["roots"].items())
    style = (
        "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#111827}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
        "td,th{border:1px solid #e5e7eb;padding:4px 8px;text-align:left}"
        ".big{font-size:20px} code{font-size:12px}"
    )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "agent",
            "node",
            "calls",
            "failed",
            "error before",
            "error after",
            "recoveries by a fix",
        )
    )
    fix_head = "".join(f"<th>{h}</th>" for h in ("fix", "status", "risk", "recipe", "rationale"))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>gossipmind — {esc(s["scenario"])}</title>
<style>{style}</style></head><body>
<h1>gossipmind: {esc(s["scenario"])}</h1>
<p>{esc(result.scenario.description)}</p>
<p class="big">{esc(verdict)}</p>
<h2>Learning curve</h2>{_svg(result)}
<h2>Agents</h2><table><tr>{head}</tr>{rows}</table>
<h2>Timeline</h2><table><tr><th>t</th><th>what</th><th>detail</th></tr>{events}</table>
<h2>Fixes</h2><table><tr>{fix_head}</tr>{fixes}</table>
<h2>Replicas</h2><p>{"every node on one state root" if s["converged"] else "roots differ"}:
<code>{esc(roots)}</code></p>
</body></html>
"""


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def unmet(s: dict[str, Any]) -> str | None:
    """One line saying how the run missed its scenario's ``expect``; None if it met it."""
    accepted = s["accepted_fixes"]
    if s["expect"] == "fix" and not accepted:
        pending = ", ".join(f"{f['fix'][:8]} {f['status']} (risk {f['risk']})" for f in s["fixes"])
        return (
            f'{s["scenario"]}: expect = "fix", but no fix for its pattern was accepted '
            f"by the end of the run ({'fixes: ' + pending if pending else 'none proposed'})"
        )
    if s["expect"] == "no_fix" and accepted:
        ids = ", ".join(f[:8] for f in accepted)
        return (
            f'{s["scenario"]}: expect = "no_fix", but {len(accepted)} fix(es) for its pattern '
            f"were accepted: {ids}"
        )
    return None


def _verdict(s: dict[str, Any]) -> str:
    if s["expect"] == "no_fix":
        ok = not s["accepted_fixes"]
        return (
            "No fix was accepted for this pattern, as it must be."
            if ok
            else "A fix was accepted although none should be!"
        )
    if s["fleet_error_after"] is None and s.get("known_before"):
        return (
            f"A fix for this pattern was accepted before this run; fleet error rate "
            f"{s['fleet_error_before'] * 100:.1f}% over the run."
        )
    if s["fleet_error_after"] is None:
        return "The fleet did not learn a fix in time."
    return (
        f"Fleet error rate {s['fleet_error_before'] * 100:.1f}% before the fleet learned, "
        f"{s['fleet_error_after'] * 100:.1f}% after "
        f"({(s['reduction'] or 0) * 100:.0f}% fewer failures)."
    )
