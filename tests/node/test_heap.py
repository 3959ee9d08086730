"""The node's garbage-collector settings (node.heap)."""

from __future__ import annotations

import gc
import weakref

from gossipmind.node import heap


class _Cyclic:
    def __init__(self) -> None:
        self.me = self


def test_settling_collects_less_often_and_unsettling_restores_python_s_thresholds() -> None:
    before = gc.get_threshold()
    heap.settle_heap()
    try:
        assert gc.get_threshold() == heap.THRESHOLDS
        assert gc.get_freeze_count() > 0  # what lived at settle time is out of reach
        # a cycle made after settling is still collected, by the collector on its
        # own: once THRESHOLDS[0] more objects are allocated than freed
        ref = weakref.ref(_Cyclic())
        assert ref() is not None
        kept = []
        for _ in range(2 * heap.THRESHOLDS[0]):
            kept.append([])  # containers: the allocations the collector counts
            if ref() is None:
                break
        assert ref() is None
        assert len(kept) > heap.THRESHOLDS[0] // 2  # not at Python's default of 700
    finally:
        heap.unsettle_heap()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_nested_settles_undo_in_order_and_unfreeze_only_at_the_outermost() -> None:
    """A benchmark settles its nodes, then the baseline's hosts inside that: undoing
    the inner one keeps the nodes' heap frozen and the thresholds set."""
    before = gc.get_threshold()
    heap.settle_heap()
    try:
        heap.settle_heap()
        heap.unsettle_heap()
        assert gc.get_threshold() == heap.THRESHOLDS and gc.get_freeze_count() > 0
    finally:
        heap.unsettle_heap()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
