"""Keep Python's cyclic garbage collector off a node's long-lived heap."""

from __future__ import annotations

import gc

# The collector's thresholds once a node runs: a young collection per 10 000 net
# allocations instead of 700, and the older generations as often relative to it
# as Python's defaults. Nearly every object a node allocates per op is freed by
# reference counting within the op; with the defaults the collector still walked
# them. Ten nodes in one process (`gossipmind bench convergence`) spent 1.5-1.8 ms
# of the ~22 ms of CPU of each op's propagation collecting (0.07 ms with these),
# and every ~125 ops a full collection stopped every node for 16-21 ms: the
# slowest samples. Cycles are still collected, later.
THRESHOLDS = (10_000, 10, 10)
_saved: list[tuple[int, int, int]] = []


def settle_heap() -> None:
    """Collect once, then move every object alive now out of the collector's reach,
    and collect less often from here on (:data:`THRESHOLDS`).

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
    _saved.append(gc.get_threshold())
    gc.set_threshold(*THRESHOLDS)


def unsettle_heap() -> None:
    """Undo the matching :func:`settle_heap` (a process that goes on after its nodes
    stopped, such as a benchmark or a test run): the collector's thresholds as they
    were before it, and, once the outermost one is undone, the frozen objects
    handed back to the collector."""
    if _saved:
        gc.set_threshold(*_saved.pop())
    if not _saved:
        gc.unfreeze()
