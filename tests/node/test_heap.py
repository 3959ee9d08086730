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
        # cycles made after settling are still collected
        ref = weakref.ref(_Cyclic())
        assert ref() is not None
        gc.collect()
        assert ref() is None
    finally:
        heap.unsettle_heap()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
