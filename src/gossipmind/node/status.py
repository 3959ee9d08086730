"""A node's status: what ``GET /v1/status``, the metrics and the daemon's status
lines report (docs/operations.md §8)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from gossipmind.node.node import Node


def status_of(node: Node, *, root: bool = True) -> dict[str, Any]:
    """Counters and state; ``root=False`` leaves out the state root (a pass over
    every op id after new ops: metrics do not need it)."""
    r = node.store.replica
    return {
        "network": node.net.hex(),
        "key": node.identity.public.hex(),
        "peer_id": node.transport.peer_id,
        "addrs": node.transport.addrs(),
        "peers": sorted(node.transport.peers()),
        "known_peers": len(node.addrbook),
        "foreign_peers": len(node.foreign.held(trio.current_time())),
        "explored": node.peering.explored,
        "ops": len(r.meta),
        "heads": len(r.heads),
        "pending": len(r.pending),
        "pending_evicted": r.pending.evicted,
        "rejected": len(r.rejected),
        "equivocations": len(r.equivocations),
        **({"root": r.root().hex()} if root else {}),
        "roles": sorted(r.roles(node.identity.public).roles),
        "key_equivocating": node.identity.public in r.membership.equivocators,
        "counters": asdict(node.counters),
        "sync": asdict(node.sync),
        "writes": asdict(node.writes.stats),
        "checkpoints": asdict(node.store.checkpoints.stats),
        "gossip_rejected": dict(node.validator.stats.rejected),
        "gossip_accepted": node.validator.stats.accepted,
        # reports an SDK sent again whose id the node had counted already
        # and reports answered, not written yet (journaled), and the journal's commits;
        # held: patterns and fixes whose steady stream of reports waits out its hold
        "reports": {
            "duplicates": node.reporter.duplicates,
            "journaled": node.reporter.journaled,
            "held": node.reporter.held(),
            "journal_commits": node.reporter.takes,
        },
    }
