"""Blocking SDK work (HTTP to the node) off an async agent's event loop, failing open.

The SDK has threads of its own for this: it never uses the agent's default
executor (asyncio) or the default thread limiter (trio), which the agent's own
blocking work may hold (or may have shut down). And a hand-off that fails (no
thread can be started, the interpreter is shutting down) is "no answer" — the
SDK never replaces the agent's value or error with one of its own.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import sniffio

log = logging.getLogger("gossipmind.sdk")
T = TypeVar("T")

WORKERS = 8  # at most, started as needed: threads of the SDK's own per process (trio: per run)


class Workers:
    """Up to ``size`` daemon threads running blocking SDK calls, started as needed.

    A thread is started only when no worker is idle; past ``size`` jobs wait
    their turn. Daemon threads: a node call stuck until its timeout never holds
    the agent's process at exit.
    """

    def __init__(self, size: int, name: str = "gossipmind-sdk") -> None:
        self.size = size
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)  # one per worker waiting for a job
        self._lock = threading.Lock()
        self._started = 0

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Queue ``fn``; raises (and queues nothing) if no worker thread can run it."""
        self._ensure_worker()
        future: Future[T] = Future()
        self._jobs.put((future, fn))
        return future

    def threads(self) -> list[threading.Thread]:
        with self._lock:
            return [t for t in self._threads if t.is_alive()]

    def close(self, timeout: float | None = None) -> None:
        """Stop the threads once the jobs queued before are done (a submit starts anew)."""
        with self._lock:
            threads, self._threads = self._threads, []
            self._idle = threading.Semaphore(0)
            for _ in threads:
                self._jobs.put(None)
        for thread in threads:
            thread.join(timeout)

    def _ensure_worker(self) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            if self._idle.acquire(blocking=False) and self._threads:
                return  # an idle worker takes the job
            if not self._threads:
                self._idle = threading.Semaphore(0)
            if len(self._threads) >= self.size:
                return  # the job waits for the next free worker
            name = f"{self.name}-{self._started}"
            thread = threading.Thread(target=self._work, name=name, daemon=True)
            try:
                thread.start()
            except RuntimeError:  # "can't start new thread"
                if self._threads:
                    return  # the job waits for a worker there is
                raise
            self._started += 1
            self._threads.append(thread)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn = job
            if future.set_running_or_notify_cancel():
                try:
                    result = fn()
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del job, future, fn
            self._idle.release()


_workers = Workers(WORKERS)


def _after_fork() -> None:  # the child has none of the parent's threads
    global _workers  # noqa: PLW0603
    _workers = Workers(WORKERS)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


async def off_loop(fn: Callable[..., T], *args: Any) -> T | None:
    """``fn(*args)`` in one of the SDK's own threads, off the event loop; None if that fails.

    trio or asyncio, found with sniffio; under another loop it runs inline. Only
    cancellation (a BaseException) goes through: any Exception, from the
    hand-off or from ``fn``, is logged and read as "no answer".
    """
    call = functools.partial(fn, *args)
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = ""
    try:
        if library == "trio":
            return await _trio_thread(call)
        if library == "asyncio":
            import asyncio

            return await asyncio.wrap_future(_workers.submit(call))
        return call()
    except Exception as sdk_error:  # noqa: BLE001 - never replaces the agent's value or error
        log.debug("gossipmind SDK work off the event loop failed: %r", sdk_error)
        return None


_trio_limiter: Any = None  # trio.lowlevel.RunVar[trio.CapacityLimiter], made on first use
_trio_limiter_lock = threading.Lock()


async def _trio_thread(call: Callable[[], T]) -> T:
    """``call()`` in a trio worker thread under a limiter of the SDK's own (per trio run)."""
    import trio

    global _trio_limiter  # noqa: PLW0603 - one RunVar per process, made lazily (trio is optional)
    with _trio_limiter_lock:
        if _trio_limiter is None:
            _trio_limiter = trio.lowlevel.RunVar("gossipmind_sdk_limiter")
    try:
        limiter = _trio_limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(WORKERS)
        _trio_limiter.set(limiter)
    # (trio-stubs predate abandon_on_cancel)
    result: T = await trio.to_thread.run_sync(  # type: ignore[call-arg]
        call, abandon_on_cancel=True, limiter=limiter
    )
    return result
