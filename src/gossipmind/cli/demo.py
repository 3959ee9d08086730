"""`gossipmind demo` — a single-process walk through the knowledge base.

Four replicas (an admin, two agents, a verifier), each with its own identity and
SQLite store in a temporary directory. Ops are handed from store to store in
process; the libp2p network replaces that hand-off in `gossipmind node`.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

import click

from gossipmind.cli.common import errors
from gossipmind.cli.output import console, short, table
from gossipmind.core.identity import Identity
from gossipmind.core.policy import Policy
from gossipmind.core.replica import create_genesis
from gossipmind.core.schema import fix_id
from gossipmind.core.snapshot import fix_row, pattern_row
from gossipmind.learn.batcher import ReportBatcher
from gossipmind.learn.drill import drill_pattern
from gossipmind.learn.patterns import Failure, reduce
from gossipmind.learn.synth import propose_body, synthesize
from gossipmind.store.datadir import DataDir
from gossipmind.store.keyfile import new_identity, write_key
from gossipmind.store.sqlite import Store


class Peer:
    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.dir = DataDir(root / name)
        self.dir.ensure()
        self.identity: Identity = new_identity()
        write_key(self.dir.key, self.identity)
        self.store: Store | None = None

    @property
    def kb(self) -> Store:
        assert self.store is not None
        return self.store

    def write(self, kind: str, body: dict[str, object]) -> None:
        self.kb.create_op(self.identity, kind, body, int(time.time() * 1000))


def hand_off(src: Peer, dst: Peer) -> int:
    """Give dst every op src has (what gossip and sync do between nodes)."""
    raws = [raw for _, raw in src.kb.iter_raw(0, 10**9)]
    return len(dst.kb.ingest_raw(raws).applied)


def step(n: int, text: str) -> None:
    console.print(f"\n[bold cyan]{n}.[/] [bold]{text}[/]")


def flaky_search(rng: random.Random) -> Failure:
    user = rng.choice(["ana@example.com", "bo.li@example.org", "c.ruiz@example.net"])
    ms = rng.randint(2900, 3400)
    return Failure(
        service="search",
        operation="query",
        exc_type="httpx.ReadTimeout",
        status=504,
        message=f"GET https://api.example.com/v1/search?q=shoes&user={user} timed out after "
        f"{ms} ms (request {rng.getrandbits(64):016x})",
        context={"query": "shoes", "user": user, "page": rng.randint(1, 9)},
        latency_ms=ms,
    )


def walk(root: Path) -> None:
    rng = random.Random(7)
    admin, a, b, v = (Peer(root, n) for n in ("admin", "agent-a", "agent-b", "verifier"))
    peers = [admin, a, b, v]

    step(1, "admin creates a network (genesis op with the policy)")
    genesis = create_genesis(
        admin.identity, "demo", Policy(), os.urandom(16), int(time.time() * 1000)
    )
    for p in peers:
        p.store = Store.create(p.dir.store, genesis)
    console.print(f"   network {genesis.id.hex()}  synthesis threshold: 2 distinct reporters")

    step(2, "admin grants two agents membership and a tier-1 verifier the scope 'search'")
    for p in (a, b):
        admin.write("member.grant", {"member": p.identity.public, "role": "member", "name": p.name})
    admin.write(
        "member.grant",
        {
            "member": v.identity.public,
            "role": "verifier",
            "tier": 1,
            "scopes": ["search"],
            "name": v.name,
        },
    )
    for p in (a, b, v):
        hand_off(admin, p)

    step(3, "both agents' search calls time out; each node reduces the failures to a pattern")
    for p in (a, b):
        batcher = ReportBatcher()
        for _ in range(rng.randint(3, 6)):
            failure = flaky_search(rng)
            batcher.add(reduce(failure), int(time.time() * 1000))
        console.print(f"   {p.name}: raw message e.g. [dim]{failure.message}[/]")
        for body in batcher.flush(int(time.time() * 1000)):
            p.write("pattern.report", body)
            console.print(
                f"   {p.name}: shares only  [green]{body['template']}[/] x{body['count']}"
            )
    for src in (a, b):
        for dst in peers:
            if dst is not src:
                hand_off(src, dst)

    step(4, "the pattern crossed the threshold: agent-a synthesizes and drills a fix")
    pattern = max(a.kb.replica.fold.patterns.values(), key=lambda x: x.count)
    row = pattern_row(pattern, genesis.body["policy"]["synthesis_threshold"])
    console.print(
        f"   pattern {short(row['pattern'])}: {row['count']} failures from "
        f"{row['reporters']} reporters, avg latency {row['latency_ms_avg']} ms"
    )
    cand = synthesize(row, a.kb.replica.policy).candidates[0]
    fid = fix_id(row["pattern"], cand.recipe)
    result = drill_pattern(cand.recipe, row, fid)
    console.print(f"   recipe: {[s['type'] for s in cand.recipe['steps']]}  risk {cand.risk}")
    console.print(
        f"   drill (seed = fix id): success {result.success_bp / 100:.1f}% vs "
        f"{result.baseline_success_bp / 100:.1f}% without, amplification "
        f"{result.amplification_pm / 1000:.2f}x"
    )
    a.write("fix.propose", propose_body(cand, row["pattern"], result.to_body()))
    hand_off(a, v)

    step(5, "the verifier re-runs the same drill, gets the same numbers, and attests")
    again = drill_pattern(cand.recipe, row, fid)
    same = again == result
    console.print(f"   reproduced: {'[green]identical[/]' if same else '[red]DIFFERENT[/]'}")
    verdict = "accept" if same and again.better_than_baseline else "reject"
    attest = {"fix": fid, "scope": cand.recipe["scope"], "verdict": verdict}
    v.write("fix.attest", {**attest, "reasons": ["drill reproduced"], "evidence": again.to_body()})
    for dst in peers:
        if dst is not v:
            hand_off(v, dst)
    for dst in peers:
        hand_off(a, dst)

    step(6, "every replica agrees")
    rows = []
    for p in peers:
        fix = p.kb.replica.fold.fixes.get(fid)
        doc = fix_row(p.kb.replica, fix) if fix else None
        status = doc["status"] if doc else "-"
        rows.append([p.name, len(p.kb.replica.meta), short(p.kb.replica.root(), 16), status])
    table("replicas", ["node", "ops", "state root", "fix"], rows)
    roots = {p.kb.replica.root() for p in peers}
    console.print("   one root on every node" if len(roots) == 1 else "[red]roots differ[/]")
    for p in peers:
        p.kb.close()


@click.command()
@click.option("--keep", is_flag=True, help="Keep the data dirs (printed) for inspection.")
@errors
def demo(keep: bool) -> None:
    """A walk through the knowledge base: network, grants, reports, a fix, a verdict."""
    if keep:
        root = Path(tempfile.mkdtemp(prefix="gossipmind-demo-"))
        walk(root)
        console.print(f"\nInspect it yourself:  gossipmind --data-dir {root / 'agent-b'} fixes")
        return
    with tempfile.TemporaryDirectory(prefix="gossipmind-demo-") as tmp:
        walk(Path(tmp))
