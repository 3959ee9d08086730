"""Prepare the data dirs of a local testnet: keys, genesis, grants (no processes).

Layout under ``root``::

    genesis.json          the network's genesis (shareable)
    node-0/ … node-N-1/   one data dir per node: identity.key, kb.sqlite3, node.toml

``node-0`` holds the genesis key (the admin). Nodes 1..V are verifiers of tier 1
for every scope; the rest are members. ``spares`` more data dirs (``node-N`` …)
are granted as members but flagged ``spare``: the launcher does not start them
(late joiners, in-process helpers). Every store starts with the genesis and the
grants, so nodes are authorized from their first op.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from gossipmind.core.identity import Identity
from gossipmind.core.policy import Policy
from gossipmind.core.replica import create_genesis
from gossipmind.store.datadir import DataDir, dump_genesis
from gossipmind.store.keyfile import new_identity, write_key
from gossipmind.store.sqlite import Store


@dataclass(frozen=True)
class NodeSpec:
    name: str
    dir: Path
    key: bytes
    role: str  # admin | verifier | member
    spare: bool = False


def prepare(
    root: Path,
    nodes: int,
    verifiers: int = 0,
    *,
    policy: Policy | None = None,
    name: str = "testnet",
    verifier_tiers: list[int] | None = None,
    spares: int = 0,
) -> list[NodeSpec]:
    """Create ``nodes`` (+ ``spares``) data dirs under ``root`` (which must not hold a testnet)."""
    if nodes < 1 or not 0 <= verifiers < nodes:
        raise ValueError("need at least one node and fewer verifiers than nodes")
    if spares < 0:
        raise ValueError("spares must not be negative")
    total = nodes + spares
    root.mkdir(parents=True, exist_ok=True)
    if (root / "genesis.json").exists():
        raise FileExistsError(f"{root} already holds a testnet")
    ids: list[Identity] = [new_identity() for _ in range(total)]
    now = _now()
    genesis = create_genesis(
        ids[0], name, policy or Policy(open_membership=False), os.urandom(16), now
    )
    (root / "genesis.json").write_text(dump_genesis(genesis))
    specs: list[NodeSpec] = []
    admin_dir = DataDir(root / "node-0")
    admin_dir.ensure()
    write_key(admin_dir.key, ids[0])
    admin = Store.create(admin_dir.store, genesis, synchronous="NORMAL")
    tiers = verifier_tiers or [1] * verifiers
    for i in range(1, total):
        body: dict[str, object] = {"member": ids[i].public, "name": f"node-{i}"}
        if i <= verifiers:
            body.update(role="verifier", tier=tiers[(i - 1) % len(tiers)], scopes=["*"])
        else:
            body["role"] = "member"
        admin.create_op(ids[0], "member.grant", body, now)
    raws = [raw for _, raw in admin.iter_raw(0, 10**6)]
    admin.close()
    specs.append(NodeSpec("node-0", admin_dir.root, ids[0].public, "admin"))
    for i in range(1, total):
        d = DataDir(root / f"node-{i}")
        d.ensure()
        write_key(d.key, ids[i])
        with Store.create(d.store, genesis, synchronous="NORMAL") as store:
            store.ingest_raw(raws)
        d.genesis.write_text(dump_genesis(genesis))
        role = "verifier" if i <= verifiers else "member"
        specs.append(NodeSpec(f"node-{i}", d.root, ids[i].public, role, spare=i >= nodes))
    admin_dir.genesis.write_text(dump_genesis(genesis))
    (root / "nodes.json").write_text(
        json.dumps(
            [
                {
                    "name": s.name,
                    "dir": str(s.dir),
                    "key": s.key.hex(),
                    "role": s.role,
                    "spare": s.spare,
                }
                for s in specs
            ],
            indent=2,
        )
    )
    return specs


def _now() -> int:
    return int(time.time() * 1000)
