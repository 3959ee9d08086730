"""Parallel Ed25519 verification: PyNaCl releases the GIL, so threads use every core."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

from gossipmind.core.ops import Op

_MIN_PARALLEL = 64
_pool: ThreadPoolExecutor | None = None


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _get_pool() -> ThreadPoolExecutor:
    global _pool  # noqa: PLW0603 - one process-wide pool, created on first use
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="gm-verify")
    return _pool


def _verify_chunk(ops: list[Op]) -> list[bool]:
    return [op.verify_signature() for op in ops]


def verify_all(ops: list[Op]) -> list[bool]:
    """Verify every op's signature; the result is in the same order as ``ops``."""
    workers = _workers()
    if len(ops) < _MIN_PARALLEL or workers == 1:
        return _verify_chunk(ops)
    size = -(-len(ops) // workers)
    chunks = [ops[i : i + size] for i in range(0, len(ops), size)]
    out: list[bool] = []
    for part in _get_pool().map(_verify_chunk, chunks):
        out.extend(part)
    return out


class Verification:
    """Signatures being verified in the background; ``result()`` waits for them."""

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops
        workers = _workers()
        if len(ops) < _MIN_PARALLEL or workers == 1:
            self._done: list[bool] | None = _verify_chunk(ops)
            self._futures: list[Future[list[bool]]] = []
        else:
            size = -(-len(ops) // workers)
            pool = _get_pool()
            self._done = None
            self._futures = [
                pool.submit(_verify_chunk, ops[i : i + size]) for i in range(0, len(ops), size)
            ]

    def ready(self) -> bool:
        """True once ``result()`` would not wait."""
        return self._done is not None or all(f.done() for f in self._futures)

    def result(self) -> list[bool]:
        if self._done is None:
            self._done = [ok for f in self._futures for ok in f.result()]
        return self._done
