"""``@client.resilient(...)``: the whole flow around one of the agent's calls."""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from gossipmind.api.offload import off_loop
from gossipmind.learn.executor import Execution

if TYPE_CHECKING:
    from gossipmind.api.client import Client, Fix

log = logging.getLogger("gossipmind.sdk")
T = TypeVar("T")


class Resilient:
    """``@client.resilient(service=..., operation=...)`` or ``with client.resilient(...)``.

    As a decorator (sync, asyncio or trio functions) it does the whole flow:
    call → on error report the failure → look up an accepted fix → apply it
    (the failed call counts as the first attempt) → report the outcome → return
    the value, else degrade (``on_failure="degrade"``: return ``default``, or
    ``default(exc)`` if callable) or re-raise the last error.

    A call marked ``idempotent=False`` is never retried after a failure without
    an idempotency key (the first attempt may have been applied). So when the
    cache holds an accepted fix for this service and operation that carries an
    idempotency key, the call runs under it from its first attempt.

    The call never waits for the node: the failure and the outcome are queued
    (sent by the SDK's outbox thread) and the fix comes from the cache the event
    stream keeps. Only a client without a stream (``stream=False``) or a canary
    asks the node for the fix when a call fails (one request, at most its
    ``timeout``; off the event loop for coroutine functions).

    As a context manager it reports a failure raised in the block and re-raises
    it (or suppresses it with ``on_failure="degrade"``; ``.error`` and ``.fix``
    tell what happened in the latest block: each ``with`` starts them at
    ``None``). A block cannot be re-run: to apply fixes, decorate a function or
    use :meth:`call` / :meth:`acall`. One instance used as a context manager
    holds one block's result: do not share it between threads or tasks.
    """

    def __init__(
        self,
        client: Client,
        service: str,
        operation: str,
        idempotent: bool,
        on_failure: str,
        default: Any,
    ) -> None:
        self.client = client
        self.service = service
        self.operation = operation
        self.idempotent = idempotent
        self.on_failure = on_failure
        self.default = default
        self.error: BaseException | None = None
        self.fix: Fix | None = None
        self._t0 = 0.0

    def _fresh(self) -> Resilient:
        return Resilient(
            self.client,
            self.service,
            self.operation,
            self.idempotent,
            self.on_failure,
            self.default,
        )

    def _queue(self, exc: BaseException, started: float) -> bytes | None:
        """Queue the failure's report (never waiting, never raising); its pattern."""
        reduced = _quietly(
            self.client._queue_failure,
            exc,
            service=self.service,
            operation=self.operation,
            latency_ms=int((time.monotonic() - started) * 1000),
        )
        return reduced.pattern if reduced is not None else None

    def _report(self, exc: BaseException, started: float) -> Fix | None:
        """Queue the failure's report, then look up a fix; never raising. It waits for
        the node only if the client asks it for fixes (:meth:`Client.lookup_waits`)."""
        pattern = self._queue(exc, started)
        return _quietly(self.client._lookup, pattern) if pattern is not None else None

    async def _areport(self, exc: BaseException, started: float) -> Fix | None:
        """:meth:`_report` for coroutine functions: off the event loop if it may wait."""
        if self.client.lookup_waits():
            return await off_loop(self._report, exc, started)
        return self._report(exc, started)

    def _preventive(self) -> Fix | None:
        if self.idempotent:
            return None
        return _quietly(self.client.preventive_fix, self.service, self.operation)

    def _apply(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        idempotent: bool,
        prior: BaseException | None,
    ) -> Execution[T] | None:
        """``fn`` under the fix, or ``None`` if the fix cannot be applied here.

        The executor never raises the call's own error: what it raises (a recipe
        this SDK cannot read, say one from a newer node; a local allow-list check
        that fails) comes before any attempt was made. The call then goes on as if
        no fix were known: run as written, or end with its own error.
        """
        assert self.fix is not None
        try:
            return self.client.apply_fix(
                self.fix, fn, *args, idempotent=idempotent, prior_error=prior, **kwargs
            )
        except Exception as sdk_error:  # noqa: BLE001 - never replaces the agent's value or error
            self._not_applied(sdk_error)
            return None

    async def _aapply(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        idempotent: bool,
        prior: BaseException | None,
    ) -> Execution[T] | None:
        """:meth:`_apply` for coroutine functions."""
        assert self.fix is not None
        try:
            return await self.client.apply_fix_async(
                self.fix, fn, *args, idempotent=idempotent, prior_error=prior, **kwargs
            )
        except Exception as sdk_error:  # noqa: BLE001 - never replaces the agent's value or error
            self._not_applied(sdk_error)
            return None

    def _not_applied(self, sdk_error: Exception) -> None:
        assert self.fix is not None
        text = f"fix {self.fix.id.hex()[:12]} not applied: {sdk_error!r}"
        log.debug("gossipmind: %s", text)
        _quietly(self.client._note_error, text)
        self.fix = None

    def _stale(self, execution: Execution[Any]) -> bool:
        """Whether to ask the node again for the preventive fix just applied: it came
        from the cache, and a client without a stream refreshes that only when it asks
        (at a call that failed without a fix). After an attempt under the fix failed,
        it asks, so a fix the node revoked is dropped (docs/sdk.md: a ``stream=False``
        client "stops applying a revoked fix at its next failed call of that pattern";
        the keyed fix of a non-idempotent call was applied for good)."""
        return bool(execution.errors) and self.fix is not None and not self.client._streams

    def _report_outcome(self, execution: Execution[Any], started: float, reported: bool) -> None:
        """Queue how the fix went (and the failure, if not yet): never waiting, never raising."""
        assert self.fix is not None
        _quietly(self.client.report_outcome, self.fix, execution.ok)
        if not execution.ok and not reported:
            self._queue(_final_error(execution), started)

    def _conclude(self, execution: Execution[Any]) -> Any:
        if execution.ok:
            if execution.attempts > 1:
                self.client.stats.recoveries += 1
            return execution.value
        return self._give_up(_final_error(execution))

    def _give_up(self, exc: BaseException) -> Any:
        self.error = exc
        if self.on_failure == "degrade":
            return self.default(exc) if callable(self.default) else self.default
        raise exc

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        started = time.monotonic()
        self.fix = self._preventive()
        if self.fix is not None:
            execution = self._apply(fn, args, kwargs, idempotent=False, prior=None)
            if execution is not None:
                self._report_outcome(execution, started, reported=False)
                if self._stale(execution):
                    _quietly(self.client.fix_for, self.fix.pattern)
                return self._conclude(execution)  # type: ignore[no-any-return]
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the agent's error: report, fix, decide
            self.fix = self._report(exc, started)
            if self.fix is None:
                return self._give_up(exc)  # type: ignore[no-any-return]
            execution = self._apply(fn, args, kwargs, idempotent=self.idempotent, prior=exc)
            if execution is None:
                return self._give_up(exc)  # type: ignore[no-any-return]
            self._report_outcome(execution, started, reported=True)
            return self._conclude(execution)  # type: ignore[no-any-return]

    async def acall(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """:meth:`call` for coroutine functions; talking to the node never blocks the loop.

        The node calls run in the SDK's own threads (:func:`off_loop`), never in the
        agent's executor, and a hand-off that fails counts as "no fix".
        """
        started = time.monotonic()
        self.fix = self._preventive()
        if self.fix is not None:
            execution = await self._aapply(fn, args, kwargs, idempotent=False, prior=None)
            if execution is not None:
                self._report_outcome(execution, started, reported=False)
                if self._stale(execution):
                    await off_loop(self.client.fix_for, self.fix.pattern)
                return self._conclude(execution)  # type: ignore[no-any-return]
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the agent's error: report, fix, decide
            self.fix = await self._areport(exc, started)
            if self.fix is None:
                return self._give_up(exc)  # type: ignore[no-any-return]
            execution = await self._aapply(fn, args, kwargs, idempotent=self.idempotent, prior=exc)
            if execution is None:
                return self._give_up(exc)  # type: ignore[no-any-return]
            self._report_outcome(execution, started, reported=True)
            return self._conclude(execution)  # type: ignore[no-any-return]

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                return await self._fresh().acall(fn, *args, **kwargs)

            return awrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return self._fresh().call(fn, *args, **kwargs)

        return wrapper

    def __enter__(self) -> Resilient:
        self.error, self.fix = None, None  # this block's, not an earlier one's
        self._t0 = time.monotonic()
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self.error = exc
        self.fix = self._report(exc, self._t0)
        return self.on_failure == "degrade"

    async def __aenter__(self) -> Resilient:
        return self.__enter__()

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self.error = exc
        self.fix = await self._areport(exc, self._t0)
        return self.on_failure == "degrade"


def _final_error(execution: Execution[Any]) -> BaseException:
    return execution.error or RuntimeError("the fix did not produce a result")


def _quietly(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``fn(...)``, or ``None`` if it fails: the SDK never breaks the agent's call path."""
    try:
        return fn(*args, **kwargs)
    except Exception as sdk_error:  # noqa: BLE001 - never replaces the agent's value or error
        log.debug("gossipmind SDK error ignored: %r", sdk_error)
        return None
