"""``testnet status``: one row per node, from the state file, the stores and the logs.

A node's state is ``running``, ``starting`` (its process lives but the node
has logged no ready or status line since the process started, for at most a
few status intervals), ``unresponsive`` (its process lives but its latest line
is older than a few status intervals, or it has logged none for that long
since its start: SIGSTOPped, hung, or its event loop stuck), ``spare``,
``not started``, or how its process ended (``stopped``, ``killed``,
``exited``). Ops and the state root come from the node's SQLite file, so
stopped nodes show too; peers come from its latest status line, and are
unknown (None) for a starting or unresponsive node. The majority root is the
one more than half of the running nodes hold (of every started or non-spare
node's store when none runs): stopped stores do not vote. A node is converged if
it has that root and is neither starting nor unresponsive; a stopped node with
that root is up to date with the running ones. ``link_faults`` is what the
node's ``control.json`` sets (``{"drop": …, "delay_s": …}``, None when none):
``heal`` clears it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gossipmind.testnet import nodefiles

if TYPE_CHECKING:
    from gossipmind.testnet.launcher import Testnet

STALE_INTERVALS = 5  # status lines missed before a running node is "unresponsive"
STALE_FLOOR_S = 3.0


def stale_after_s(status_every: float) -> float:
    """How old a running node's latest status line may be before it is "unresponsive"."""
    return max(STALE_INTERVALS * status_every, STALE_FLOOR_S)


def status_rows(tn: Testnet) -> list[dict[str, Any]]:
    """One row per node: role, state, pid, peers, ops, root, converged…"""
    st = tn.state()
    rows: list[dict[str, Any]] = []
    stale_after = stale_after_s(st.status_every)
    now = time.time()
    for n in st.nodes:
        proc = st.proc_of(n)
        up = tn.alive(proc)
        line = tn.latest(n.name, st=st) if up else None
        age = _line_age(line, now)
        if up and line is None:  # nothing logged since this process started
            since = now - proc.started_at if proc and proc.started_at > 0 else 0.0
            state = "unresponsive" if since > stale_after else "starting"
        elif up:
            state = "unresponsive" if age is not None and age > stale_after else "running"
        elif proc is None:
            state = "spare" if n.spare else "not started"
        else:
            state = proc.ended or "exited"
        if state == "unresponsive":
            line = None  # what it last said about its peers is stale
        info = tn.store_info(n.name)
        rows.append(
            {
                "name": n.name,
                "role": n.role,
                "spare": n.spare,
                "state": state,
                "pid": proc.pid if up and proc else None,
                "process": proc.id if proc else None,
                "siblings": [x for x in proc.nodes if x != n.name] if proc else [],
                "addr": n.addr,
                "peers": line.get("peers") if line and line["event"] == "status" else None,
                "gossip_rejected": line.get("gossip_rejected") if line else None,
                "ops": info[0] if info else None,
                "root": info[1] if info else None,
                "group": _group_of(n.name, st.partition),
                "api": nodefiles.api_url(Path(n.dir), proc.pid if up and proc else None),
                "responsive": None if not up or state == "starting" else state == "running",
                "status_age_s": None if age is None else round(age, 1),
                "link_faults": link_faults(Path(n.dir)),
                "commit": _commit(line),
            }
        )
    voters = [r for r in rows if r["root"] and (not r["spare"] or r["process"])]
    running = [r for r in voters if r["state"] == "running"]
    counted = [r["root"] for r in (running or voters)]
    top = Counter(counted).most_common(1)
    majority = top[0][0] if top and top[0][1] * 2 > len(counted) else None
    for r in rows:
        r["converged"] = (
            r["root"] is not None
            and r["root"] == majority
            and r["state"] not in ("starting", "unresponsive")
        )
    return rows


def _commit(line: dict[str, Any] | None) -> str | None:
    """The git commit a node's line says it runs (status lines, or its ready line's
    build); None for a node of a build from before lines said it."""
    if line is None:
        return None
    found = line.get("commit") or (line.get("build") or {}).get("commit")
    return found if isinstance(found, str) else None


def builds_note(rows: list[dict[str, Any]]) -> str | None:
    """``2 builds run: 8779330466a1 (node-0, node-1), unknown (node-2)`` when the
    running nodes do not all run one commit (a rolling upgrade), else None."""
    by: dict[str, list[str]] = {}
    for r in rows:
        if r["state"] == "running":
            by.setdefault(r.get("commit") or "unknown", []).append(r["name"])
    if len(by) < 2:
        return None
    parts = (f"{c} ({', '.join(names)})" for c, names in sorted(by.items()))
    return f"{len(by)} builds run: " + ", ".join(parts)


def link_faults(data_dir: Path) -> dict[str, float] | None:
    """The lossy/slow link the node's ``control.json`` sets; None if none (or unreadable)."""
    try:
        doc = json.loads((data_dir / nodefiles.CONTROL_FILE).read_text())
        drop, delay = float(doc.get("drop", 0.0)), float(doc.get("delay_s", 0.0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return {"drop": drop, "delay_s": delay} if drop or delay else None


def _line_age(line: dict[str, Any] | None, now: float) -> float | None:
    """Seconds since the node logged ``line`` (None without a usable timestamp)."""
    ts = line.get("ts") if line else None
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    return max(0.0, now - ts)


def _group_of(name: str, groups: list[list[str]] | None) -> int | None:
    if groups is None:
        return None
    return next((i for i, g in enumerate(groups) if name in g), None)
