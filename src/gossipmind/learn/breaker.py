"""Attempt guards: circuit breakers, clocks, per-attempt timeouts and error signals.

**Circuit breakers** are shared by every call an
:class:`~gossipmind.learn.executor.Executor` makes, one per key (by
convention ``(service, operation)``), with the usual three states:

- ``closed``: attempts pass; ``failure_threshold`` consecutive *service*
  failures (classes in ``TRIPPING_CLASSES``) open the breaker.
- ``open``: attempts are refused until ``reset_ms`` have passed since it opened.
  A failure recorded meanwhile (an attempt the breaker did not guard: an
  idempotent call's first try, made as written before its fix applies) does
  not open it again: it would never close while the service fails now and then.
- ``half_open``: exactly one trial attempt passes; its success closes the
  breaker, its failure opens it again (for another ``reset_ms``).

Errors that prove the service answered (``validation``, ``auth``,
``not_found``, ``conflict``) reset the failure count like a success: a 404 is
not an outage.

**Clocks** carry all the time the executor uses, in milliseconds, so tests
and drills run in simulated time (``gossipmind.learn.simulator.SimClock``):
:class:`SystemClock` for sync calls (monotonic time; an attempt with a time
limit runs in a daemon worker thread and, when the limit passes, is abandoned,
not killed: it runs on and its result is discarded; the executor sets such a
limit only under a ``timeout`` step) and
:class:`NativeAsyncClock` for coroutines (trio or asyncio, found with sniffio;
limits are a cancel scope / ``asyncio.timeout``, which do stop the attempt).

**Error signals**: :func:`default_classifier`, a simple error taxonomy by
exception type and HTTP status (the SDK may pass a richer classifier), and
:func:`retry_after_ms`, the wait an error asks for.
"""

from __future__ import annotations

import contextvars
import datetime
import math
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol, TypeVar, cast

import sniffio

from gossipmind.core.errors import RecipeError

T = TypeVar("T")
Classifier = Callable[[BaseException], str]

TRIPPING_CLASSES = frozenset({"connection", "rate_limited", "server_error", "timeout", "unknown"})
CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
MAX_RETRY_AFTER_MS = 2**31 - 1  # the bound the node's API puts on a failure's retry_after_ms


class AttemptTimeout(RecipeError, TimeoutError):
    """An attempt ran past the recipe's ``timeout`` (or the budget's deadline)."""


class CircuitOpen(RecipeError):
    """The circuit breaker for this call is open: the attempt was not made."""


# --------------------------------------------------------------------------- clocks


class Clock(Protocol):
    """Time for sync calls, in milliseconds."""

    def now_ms(self) -> float: ...
    def sleep_ms(self, ms: int) -> None: ...
    def call_with_timeout(self, fn: Callable[[], T], timeout_ms: float) -> T: ...


class AsyncClock(Protocol):
    """Time for async calls, in milliseconds."""

    def now_ms(self) -> float: ...
    async def sleep_ms(self, ms: int) -> None: ...
    async def call_with_timeout(self, fn: Callable[[], Awaitable[T]], timeout_ms: float) -> T: ...


class SystemClock:
    """``time.monotonic``, ``time.sleep``, and a worker thread per bounded attempt.

    ``bounds_in_thread``: a limit moves the attempt onto another thread, so the
    executor sets one only when the recipe has a ``timeout`` step (a clock
    without this attribute, like ``SimClock``, is taken to bound in place).
    """

    bounds_in_thread: ClassVar[bool] = True

    def now_ms(self) -> float:
        return time.monotonic() * 1000.0

    def sleep_ms(self, ms: int) -> None:
        time.sleep(ms / 1000.0)

    def call_with_timeout(self, fn: Callable[[], T], timeout_ms: float) -> T:
        box: list[tuple[bool, Any]] = []
        done = threading.Event()
        ctx = contextvars.copy_context()

        def work() -> None:
            try:
                box.append((True, ctx.run(fn)))
            except BaseException as exc:  # noqa: BLE001 - carried to the caller's thread, raised there
                box.append((False, exc))
            finally:
                done.set()

        try:
            threading.Thread(target=work, name="gossipmind-attempt", daemon=True).start()
        except RuntimeError:  # "can't start new thread" (say, abandoned attempts fill the limit)
            # run it here, unbounded, as with ``sync_timeouts=False``: the call is still
            # made; this was the attempt's "error", so the agent's call was never made and
            # ended with RuntimeError instead of its own error
            return fn()
        if not done.wait(max(timeout_ms, 0.0) / 1000.0):
            raise AttemptTimeout(f"attempt exceeded {timeout_ms:.0f} ms")
        ok, value = box[0]
        if ok:
            return cast(T, value)
        raise value


class NativeAsyncClock:
    """The running event loop's clock: trio or asyncio, detected with sniffio."""

    def now_ms(self) -> float:
        if sniffio.current_async_library() == "trio":
            import trio

            return trio.current_time() * 1000.0
        import asyncio

        return asyncio.get_running_loop().time() * 1000.0

    async def sleep_ms(self, ms: int) -> None:
        if sniffio.current_async_library() == "trio":
            import trio

            await trio.sleep(ms / 1000.0)
        else:
            import asyncio

            await asyncio.sleep(ms / 1000.0)

    async def call_with_timeout(self, fn: Callable[[], Awaitable[T]], timeout_ms: float) -> T:
        seconds = max(timeout_ms, 0.0) / 1000.0
        if sniffio.current_async_library() == "trio":
            import trio

            with trio.move_on_after(seconds):
                return await fn()
            raise AttemptTimeout(f"attempt exceeded {timeout_ms:.0f} ms")
        import asyncio

        cm = asyncio.timeout(seconds)
        try:
            async with cm:
                return await fn()
        except TimeoutError:
            if cm.expired():
                raise AttemptTimeout(f"attempt exceeded {timeout_ms:.0f} ms") from None
            raise


# ------------------------------------------------------------------- error signals


def status_of(exc: BaseException) -> int | None:
    """An HTTP status carried by ``exc`` (``status_code``/``status``, or on ``exc.response``)."""
    for obj in (exc, getattr(exc, "response", None)):
        for attr in ("status_code", "status"):
            v = getattr(obj, attr, None)
            if isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599:
                return v
    return None


def classify_status(status: int) -> str | None:
    if status in (408, 504):
        return "timeout"
    if status == 429:
        return "rate_limited"
    if status in (401, 403, 407):
        return "auth"
    if status in (404, 410):
        return "not_found"
    if status in (409, 412):
        return "conflict"
    if 400 <= status < 500:
        return "validation"
    if status >= 500:
        return "server_error"
    return None


_TIMEOUT_NAMES = frozenset({"TooSlowError", "ReadTimeout", "ConnectTimeout", "TimeoutException"})
_CONNECTION_NAMES = frozenset({"ConnectError", "RemoteProtocolError", "NetworkError"})


def default_classifier(exc: BaseException) -> str:
    """A simple error taxonomy by exception type and HTTP status (see ``ERROR_CLASSES``)."""
    names = {c.__name__ for c in type(exc).__mro__}
    if isinstance(exc, TimeoutError) or names & _TIMEOUT_NAMES:
        return "timeout"
    status = status_of(exc)
    if status is not None and (cls := classify_status(status)) is not None:
        return cls
    if isinstance(exc, ConnectionError) or names & _CONNECTION_NAMES:
        return "connection"
    if isinstance(exc, PermissionError):
        return "auth"
    if isinstance(exc, FileNotFoundError):
        return "not_found"
    if isinstance(exc, ValueError | TypeError | KeyError):
        return "validation"
    return "unknown"


def _header(headers: Any, name: str) -> Any:
    get = getattr(headers, "get", None)
    if get is None:
        return None
    v = get(name)
    if v is None and isinstance(headers, Mapping):
        v = next((val for k, val in headers.items() if str(k).lower() == name.lower()), None)
    return v


def _clamp_ms(seconds: float) -> int | None:
    """``seconds`` as ms in ``[0, MAX_RETRY_AFTER_MS]``; ``None`` for nan and infinities."""
    if not math.isfinite(seconds):
        return None
    return round(min(max(seconds * 1000.0, 0.0), float(MAX_RETRY_AFTER_MS)))


def retry_after_ms(exc: BaseException, wall_now: Callable[[], float] = time.time) -> int | None:
    """The wait ``exc`` asks for, in ms: ``retry_after_ms``, ``retry_after`` (seconds) or a
    ``Retry-After`` header (delta-seconds or HTTP-date) on ``exc.headers``/``exc.response.headers``.

    A hint that is not a finite number (``inf``, ``nan``, ``1e999``) counts as absent; a
    huge one is clamped to ``MAX_RETRY_AFTER_MS``.
    """
    v = getattr(exc, "retry_after_ms", None)
    if isinstance(v, int) and not isinstance(v, bool):
        return min(max(0, v), MAX_RETRY_AFTER_MS)
    raw = getattr(exc, "retry_after", None)
    if raw is None:
        for obj in (exc, getattr(exc, "response", None)):
            raw = _header(getattr(obj, "headers", None), "Retry-After")
            if raw is not None:
                break
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return min(max(0, raw * 1000), MAX_RETRY_AFTER_MS)
    if isinstance(raw, float):
        return _clamp_ms(raw)
    text = str(raw).strip()
    try:
        return _clamp_ms(float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:  # "-0000": UTC all the same (HTTP dates are GMT), not local time
            when = when.replace(tzinfo=datetime.UTC)
        return _clamp_ms(when.timestamp() - wall_now())
    except (TypeError, ValueError, OverflowError, OSError):
        return None


# ------------------------------------------------------------------------- breakers


@dataclass
class _State:
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    trial_in_flight: bool = False


class BreakerBoard:
    """The breakers of one executor, keyed by any hashable; time from ``now() -> ms``.

    Thread-safe.
    """

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._states: dict[Hashable, _State] = {}

    def state(self, key: Hashable, reset_ms: int | None = None) -> str:
        """``key``'s state; an open breaker reads ``half_open`` once ``reset_ms`` passed."""
        with self._lock:
            s = self._states.get(key)
            if s is None:
                return CLOSED
            if s.state == OPEN and reset_ms is not None and self._now() - s.opened_at >= reset_ms:
                return HALF_OPEN
            return s.state

    def allow(self, key: Hashable, reset_ms: int) -> bool:
        """May an attempt start now? Claims the single half-open trial if it is free."""
        with self._lock:
            s = self._states.setdefault(key, _State())
            if s.state == CLOSED:
                return True
            if s.state == OPEN:
                since = self._now() - s.opened_at
                if since < 0:
                    return True  # (simulated time) this call began before the breaker opened
                if since < reset_ms:
                    return False
                s.state = HALF_OPEN
                s.trial_in_flight = False
            if s.trial_in_flight:
                return False
            s.trial_in_flight = True
            return True

    def would_allow_at(self, key: Hashable, t: float, reset_ms: int) -> bool:
        """Would an attempt starting at time ``t`` be allowed (ignoring other callers)?"""
        with self._lock:
            s = self._states.get(key)
            if s is None or s.state == CLOSED:
                return True
            if s.state == OPEN:
                return not 0 <= t - s.opened_at < reset_ms
            return not s.trial_in_flight

    def record(self, key: Hashable, error_class: str | None, failure_threshold: int) -> None:
        """Record an attempt's result: ``None`` for success, else its error class."""
        with self._lock:
            s = self._states.setdefault(key, _State())
            s.trial_in_flight = False
            if error_class is None or error_class not in TRIPPING_CLASSES:
                s.state, s.failures = CLOSED, 0
                return
            s.failures += 1
            # an open breaker stays open from when it opened: a failure it did not
            # guard (a call's first attempt, made as written) must not re-arm it, or a
            # service failing now and then after an outage keeps it open for good
            if s.state == HALF_OPEN or (s.state == CLOSED and s.failures >= failure_threshold):
                s.state = OPEN
                s.opened_at = self._now()

    def release(self, key: Hashable) -> None:
        """An attempt ended without a verdict (cancelled): free the half-open trial slot."""
        with self._lock:
            s = self._states.get(key)
            if s is not None:
                s.trial_in_flight = False
