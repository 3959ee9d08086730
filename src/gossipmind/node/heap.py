"""Keep Python's cyclic garbage collector off a node's long-lived heap."""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Collect once, then move every object alive now out of the collector's reach.

    A node's heap is mostly long-lived: its replica and store, py-libp2p's host,
    connections and services. Python's full collections walk all of it; with ten
    nodes in one process they took 50-115 ms, every few seconds under load, and
    each one delayed every op in flight (`gossipmind bench convergence` saw them
    as its p99). After :func:`gc.freeze` they only walk what was allocated since.
    Objects frozen here are still freed by reference counting; only reference
    cycles among them are never collected. Call it once the nodes of a process
    have started (``gossipmind node`` does).
    """
    gc.collect()
    gc.freeze()


def unsettle_heap() -> None:
    """Hand frozen objects back to the collector (a process that goes on after its
    nodes stopped, such as a benchmark or a test run)."""
    gc.unfreeze()
