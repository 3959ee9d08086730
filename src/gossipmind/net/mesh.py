"""Read-only view of the gossipsub mesh of a transport (benchmarks and diagnostics).

The gossip mesh forms at heartbeats, after connections: a measurement that starts
before it formed measures fan-out start-up, not propagation. Kept apart from
:mod:`~gossipmind.net.host` so reading it never needs a change there.
"""

from __future__ import annotations

from typing import Any

from gossipmind.net.interface import Transport


def mesh_peers(transport: Transport) -> list[str]:
    """Peer ids in ``transport``'s gossipsub mesh for its topic (``[]`` for the fake)."""
    pubsub: Any = getattr(transport, "_pubsub", None)
    config: Any = getattr(transport, "config", None)
    if pubsub is None or config is None:
        return []
    mesh: dict[str, Any] = getattr(pubsub.router, "mesh", {})
    return sorted(str(p.to_base58()) for p in mesh.get(config.topic, ()))
