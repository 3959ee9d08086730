"""Apply a fix recipe (DESIGN §6) to one logical call: sync, asyncio or trio.

A recipe is data: ``fallback``/``escalate`` targets are looked up by name in
the agent's :class:`LocalRegistry` (unknown → skipped and reported, never
imported) and ``set_param`` only sets names on its allow-list. Whatever their
order in the recipe, steps compose as: ``circuit_breaker`` guards each attempt,
``set_param``/``idempotency_key`` shape its arguments, ``timeout`` bounds it,
``retry`` (tenacity) with ``respect_retry_after`` decides whether and when to
try again; after the final failure ``fallback``, else ``escalate``.

Bounds: at most ``max_attempts`` attempts (1 without ``retry``); no attempt
starts once ``budget_ms`` has run out, and a wait that would reach it ends the
call (either way with the last attempt's own error); an attempt is cut at the
budget's deadline (but see threads, below); the local fallback/escalation run
after it. A non-idempotent call is retried only if an idempotency key reaches it;
one that fails after an attempt of it was cut is *in doubt* (the provider may
still apply that attempt): its error says so, and it gets no fallback.
Fallbacks do not nest: a call made while a fallback runs gets no fallback of its
own (two decorated calls registered as each other's fallback looped until the
recursion limit: ~280 calls of the service for one call of the agent's).

Idempotency key: one per logical call, the same on every attempt (a caller's
own ``idempotency_key=``, or ``step.header`` in any case in ``headers=``, wins),
passed as ``idempotency_key=`` if the function declares it, else as
``headers[step.header]`` if the caller passed ``headers=`` or the function
declares ``headers``; else the step is skipped.

Threads: the real sync clock (``breaker.SystemClock``, ``bounds_in_thread``)
can bound an attempt only by running it in a worker thread, abandoned, not
killed, when the limit passes. So a sync attempt leaves the caller's thread
only under a ``timeout`` step (it is then cut at that timeout or the budget's
deadline, whichever comes first); without one it runs on the caller's thread
and the budget is checked between attempts, as with ``sync_timeouts=False``
(which also skips ``timeout``). Time is injected (``Clock``/``AsyncClock``)
for tests and drills; a clock that needs no thread (``SimClock``) cuts every
attempt at the budget's deadline, as the async clocks do.
"""

from __future__ import annotations

import functools
import inspect
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Mapping
from typing import Any, Generic, TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying

from gossipmind.core.errors import RecipeError
from gossipmind.core.recipe import ERROR_CLASSES
from gossipmind.learn.breaker import (
    AsyncClock,
    AttemptTimeout,
    BreakerBoard,
    CircuitOpen,
    Classifier,
    Clock,
    NativeAsyncClock,
    SystemClock,
    default_classifier,
    retry_after_ms,
)
from gossipmind.learn.headers import as_keywords
from gossipmind.learn.plan import (
    IN_FALLBACK,
    Execution,
    FallbackRun,
    LocalRegistry,
    Plan,
    Skipped,
    build_plan,
)

__all__ = ["Execution", "Executor", "LocalRegistry", "Skipped"]

T = TypeVar("T")
IN_DOUBT = (
    "an attempt of this non-idempotent call was cut at its time limit, not undone, "
    "so the provider may still apply it"
)


class _Run(Generic[T]):
    """One logical call's state; its methods are tenacity's retry/wait/stop strategies."""

    def __init__(self, ex: Executor, plan: Plan, now: Callable[[], float], key: Hashable) -> None:
        self.ex, self.plan, self.now, self.key = ex, plan, now, key
        self.record: Execution[T] = plan.record
        self.prior = plan.prior
        self.start = now()
        self.deadline = None if plan.budget_ms is None else self.start + plan.budget_ms
        self.last_class = ""
        self.last_hint: int | None = None
        self.last_exc: BaseException | None = None  # the latest error of an attempt made
        self.out_of_budget = False
        self.refused = False  # a retry the breaker refused after a real attempt
        self.cut = False  # an attempt was cut at its limit: it may still be running
        self.planned: tuple[int, int, bool] | None = None  # (attempt_number, wait ms, too long)
        self.next_wait = 0

    # -- attempts
    def begin_attempt(self) -> float | None:
        """Count an attempt; return its time limit in ms (None: unbounded).

        The budget is checked before the breaker: a half-open breaker's trial slot,
        once claimed here, is always given back by ``failed``/``succeeded``/``aborted``.
        """
        if self.prior is not None:
            prior, self.prior = self.prior, None
            self.record.attempts += 1
            self.failed(prior)
            raise prior
        p = self.plan
        limit: float | None = p.timeout_ms
        if self.deadline is not None:
            left = self.deadline - self.now()
            if left <= 0:  # a real sleep overshot the budget: end with the last real error
                self.out_of_budget = True
                self.record.stop = "budget"
                if self.last_exc is not None:
                    raise self.last_exc
                raise AttemptTimeout("the budget ran out before the attempt")
            if p.deadlines:
                limit = left if limit is None else min(limit, left)
        if p.breaker is not None and not self.ex.breakers.allow(self.key, p.breaker[1]):
            if self.last_exc is not None:  # (another call took the half-open trial meanwhile)
                self.refused = True  # end with the last real error, not CircuitOpen
                self.record.stop = "circuit_open"
                raise self.last_exc
            raise CircuitOpen(f"circuit open for {self.key!r}")
        self.record.attempts += 1
        return limit

    def call_kwargs(self) -> dict[str, Any]:
        kw = dict(self.plan.kwargs)
        if isinstance(kw.get("headers"), Mapping):
            kw["headers"] = dict(kw["headers"])
        return kw

    def failed(self, exc: BaseException) -> None:
        self.last_exc = exc
        self.cut = self.cut or isinstance(exc, AttemptTimeout)
        cls = self.ex.classify(exc)
        self.last_class = cls
        self.last_hint = self.ex.retry_after(exc) if self.plan.max_wait_ms is not None else None
        self.record.errors.append(cls)
        if self.plan.breaker is not None:
            self.ex.breakers.record(self.key, cls, self.plan.breaker[0])

    def succeeded(self) -> None:
        if self.plan.breaker is not None:
            self.ex.breakers.record(self.key, None, self.plan.breaker[0])

    def aborted(self) -> None:
        if self.plan.breaker is not None:
            self.ex.breakers.release(self.key)

    # -- tenacity strategies
    def retry(self, rs: RetryCallState) -> bool:
        outcome, p = rs.outcome, self.plan
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        if not isinstance(exc, Exception):
            return False  # a success; or cancellation, KeyboardInterrupt...: never retried
        for refused, reason in (
            (self.out_of_budget, "budget"),
            (self.refused or isinstance(exc, CircuitOpen), "circuit_open"),
            (p.max_attempts <= 1, "no_retry"),
            (not p.retries_allowed, "non_idempotent"),
            (
                self.last_class not in p.on and not self.settling(),
                f"not_retryable:{self.last_class}",
            ),
        ):
            if refused:
                self.record.stop = reason
                return False
        return True

    def settling(self) -> bool:
        """A keyed call whose earlier attempt was cut, now refused as a conflict
        (Stripe: ``409``, a request with this key is in flight): the cut attempt may
        still go through, so the call is retried with the same key, within its
        attempts and budget, until the provider answers what that attempt did.
        Ending with the conflict told the agent a charge failed that went through
        (s9 recipes review). The drill never sees a conflict: its attempts stop
        when cut."""
        return self.cut and self.last_class == "conflict" and bool(self.record.idempotency_key)

    def planned_wait(self, rs: RetryCallState) -> tuple[int, bool]:
        """The wait after attempt ``rs.attempt_number`` (ms) and whether its hint is too long.

        Computed once per attempt, whichever of ``wait``/``stop`` tenacity asks first
        (8.3 and later ask ``wait`` first, 8.2 ``stop``): the RNG is drawn once.
        """
        n = rs.attempt_number
        if self.planned is not None and self.planned[0] == n:
            return self.planned[1], self.planned[2]
        p = self.plan
        exp = min(p.cap_ms, p.base_ms * 2 ** min(n - 1, 30))
        rng = self.ex.rng
        if p.jitter == "full":
            wait = rng.randint(0, exp)
        elif p.jitter == "equal":
            wait = exp // 2 + rng.randint(0, exp - exp // 2)
        else:
            wait = exp
        too_long = False
        if self.last_hint is not None and p.max_wait_ms is not None:
            too_long = self.last_hint > p.max_wait_ms
            wait = max(wait, self.last_hint)
        self.planned = (n, wait, too_long)
        self.next_wait = wait
        return wait, too_long

    def wait(self, rs: RetryCallState) -> float:
        return self.planned_wait(rs)[0] / 1000.0

    def stop(self, rs: RetryCallState) -> bool:
        reason = ""
        wait, too_long = self.planned_wait(rs)
        resume = self.now() + wait
        if too_long:
            reason = "retry_after_exceeds_max_wait"
        elif rs.attempt_number >= self.plan.max_attempts:
            reason = "max_attempts"
        elif self.deadline is not None and resume >= self.deadline:
            reason = "budget"
        elif self.plan.breaker is not None and not self.ex.breakers.would_allow_at(
            self.key, resume, self.plan.breaker[1]
        ):
            reason = "circuit_open"
        self.record.stop = reason
        return bool(reason)

    def before_sleep(self) -> int:
        self.record.waited_ms += self.next_wait
        return self.next_wait

    # -- the end
    def finish(self, value: T | None, error: BaseException | None) -> None:
        r = self.record
        r.elapsed_ms = round(self.now() - self.start)
        if error is None:
            r.outcome, r.value, r.stop = "success", value, "success"
            return
        r.outcome, r.error = "failed", error
        if self.cut and not self.plan.idempotent:
            r.in_doubt = True  # the agent must not take "failed" for "not done"
            r.notes.append(IN_DOUBT)
            key = r.idempotency_key
            then = (
                f"look it up by its idempotency key {key!r} before trying again under a new key"
                if key
                else "check with the provider before making the call again"
            )
            note = f"gossipmind: {IN_DOUBT}; {then}"
            if note not in getattr(error, "__notes__", ()):
                error.add_note(note)

    def summary(self) -> dict[str, Any]:
        s = self.record.summary()
        s["breaker_key"] = [str(k) for k in self.key] if isinstance(self.key, tuple) else None
        return s


# ------------------------------------------------------------------------ executor


class Executor:
    """Applies recipes to calls; holds the circuit breakers shared across calls.

    ``classifier`` maps an exception to an error class (default:
    :func:`default_classifier`; a value outside ``ERROR_CLASSES`` counts as
    ``unknown``). ``clock``/``async_clock``, ``rng``, ``key_factory`` and
    ``wall_clock`` are injectable for tests and drills. Breakers read the sync
    ``clock``, so sync and async calls share one consistent breaker state.
    """

    def __init__(
        self,
        registry: LocalRegistry | None = None,
        *,
        classifier: Classifier = default_classifier,
        clock: Clock | None = None,
        async_clock: AsyncClock | None = None,
        rng: random.Random | None = None,
        key_factory: Callable[[], str] | None = None,
        wall_clock: Callable[[], float] = time.time,
        sync_timeouts: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else LocalRegistry()
        self.classifier = classifier
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.async_clock: AsyncClock = async_clock or NativeAsyncClock()
        self.rng: random.Random = rng if rng is not None else random.Random()
        self.key_factory = key_factory if key_factory is not None else lambda: secrets.token_hex(16)
        self.wall_clock = wall_clock
        self.sync_timeouts = sync_timeouts
        self.breakers = BreakerBoard(self.clock.now_ms)

    # -- helpers
    def classify(self, exc: BaseException) -> str:
        if isinstance(exc, AttemptTimeout):
            return "timeout"
        if isinstance(exc, CircuitOpen):
            return "unknown"
        try:
            cls = self.classifier(exc)
        except Exception:  # noqa: BLE001 - a broken classifier must not break the agent's call
            return "unknown"
        return cls if cls in ERROR_CLASSES else "unknown"

    def retry_after(self, exc: BaseException) -> int | None:
        try:
            return retry_after_ms(exc, self.wall_clock)
        except Exception:  # noqa: BLE001 - a malformed hint must not replace the call's error
            return None

    def _plan(
        self,
        recipe: dict[str, Any],
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        idempotent: bool,
        prior: BaseException | None,
        deadlines: bool,
    ) -> Plan:
        return build_plan(
            self.registry, self.key_factory, recipe, fn, kwargs, idempotent, prior, deadlines
        )

    # -- sync
    def run_sync(
        self,
        recipe: dict[str, Any],
        fn: Callable[..., T],
        /,
        *args: Any,
        idempotent: bool,
        breaker_key: Hashable | None = None,
        prior_error: BaseException | None = None,
        **kwargs: Any,
    ) -> Execution[T]:
        """Run ``fn(*args, **kwargs)`` under ``recipe``; never raises the call's own error.

        ``prior_error``: the call was already tried once (without the recipe) and
        failed with it; that attempt counts towards ``max_attempts`` and a
        non-idempotent call is then never retried (its first try had no key).
        """
        clock = self.clock
        given = args, kwargs  # the fallback gets the call as the agent made it
        args, kwargs = as_keywords(fn, args, kwargs)
        plan = self._plan(recipe, fn, kwargs, idempotent, prior_error, self.sync_timeouts)
        if plan.timeout_ms is None and getattr(clock, "bounds_in_thread", False):
            plan.deadlines = False  # no timeout step: no worker thread, budget between attempts
        key = breaker_key if breaker_key is not None else (plan.scope, _qualname(fn))
        run: _Run[T] = _Run(self, plan, clock.now_ms, key)

        def attempt() -> T:
            call = functools.partial(fn, *args, **run.call_kwargs())
            limit = run.begin_attempt()  # may claim a breaker trial: the try gives it back
            try:
                result = call() if limit is None else clock.call_with_timeout(call, limit)
            except Exception as exc:
                run.failed(exc)
                raise
            except BaseException:
                run.aborted()
                raise
            run.succeeded()
            return result

        retrying = Retrying(
            sleep=lambda _s: clock.sleep_ms(run.before_sleep()),
            retry=run.retry,
            wait=run.wait,
            stop=run.stop,
            reraise=True,
        )
        try:
            value = retrying(attempt)
        except Exception as exc:  # noqa: BLE001 - the call's final error: recorded, then endgame
            run.finish(None, exc)
            _drive(self._endgame(run, *given, awaits=False))
        else:
            run.finish(value, None)
        return run.record

    def execute_sync(
        self, recipe: dict[str, Any], fn: Callable[..., T], /, *a: Any, **kw: Any
    ) -> T:
        """:meth:`run_sync` (same arguments), then return the value or re-raise the final error."""
        return self.run_sync(recipe, fn, *a, **kw).unwrap()

    # -- async (asyncio or trio)
    async def run_async(
        self,
        recipe: dict[str, Any],
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        idempotent: bool,
        breaker_key: Hashable | None = None,
        prior_error: BaseException | None = None,
        **kwargs: Any,
    ) -> Execution[T]:
        """Async :meth:`run_sync` for coroutine functions, under asyncio or trio."""
        clock = self.async_clock
        given = args, kwargs
        args, kwargs = as_keywords(fn, args, kwargs)
        plan = self._plan(recipe, fn, kwargs, idempotent, prior_error, True)
        key = breaker_key if breaker_key is not None else (plan.scope, _qualname(fn))
        run: _Run[T] = _Run(self, plan, clock.now_ms, key)

        async def attempt() -> T:
            call = functools.partial(fn, *args, **run.call_kwargs())
            limit = run.begin_attempt()  # may claim a breaker trial: the try gives it back
            try:
                if limit is None:
                    result = await call()
                else:
                    result = await clock.call_with_timeout(call, limit)
            except Exception as exc:
                run.failed(exc)
                raise
            except BaseException:
                run.aborted()
                raise
            run.succeeded()
            return result

        async def sleep(_seconds: float) -> None:
            await clock.sleep_ms(run.before_sleep())

        retrying = AsyncRetrying(
            sleep=sleep, retry=run.retry, wait=run.wait, stop=run.stop, reraise=True
        )
        try:
            value: T = await retrying(attempt)
        except Exception as exc:  # noqa: BLE001 - the call's final error: recorded, then endgame
            run.finish(None, exc)
            await self._endgame(run, *given, awaits=True)
        else:
            run.finish(value, None)
        return run.record

    async def execute_async(
        self, recipe: dict[str, Any], fn: Callable[..., Awaitable[T]], /, *a: Any, **kw: Any
    ) -> T:
        """:meth:`run_async` (same arguments), then return the value or re-raise the final error."""
        return (await self.run_async(recipe, fn, *a, **kw)).unwrap()

    execute_trio = execute_async
    aexecute = execute_async

    async def _endgame(
        self, run: _Run[Any], args: tuple[Any, ...], kwargs: dict[str, Any], awaits: bool
    ) -> None:
        """After the final failure: the local fallback, else the escalation handler."""
        r, plan = run.record, run.plan
        if plan.fallback is not None and r.in_doubt:
            # the cut attempt may still be applied: a fallback (another provider) could
            # do the same work a second time, a double charge; the agent decides
            r.skipped.append(Skipped("fallback", "a cut attempt may still be applied"))
            r.applied.remove("fallback")
        elif plan.fallback is not None:
            name, fb = plan.fallback
            running = FallbackRun()
            inside = IN_FALLBACK.set(running)  # a call the fallback makes gets no fallback
            try:
                r.value = await _settle(fb(*args, **kwargs), awaits)
            except Exception as exc:  # noqa: BLE001 - fallback failed too: keep the call's error
                r.notes.append(f"fallback {name!r} failed: {type(exc).__name__}")
            else:
                r.outcome, r.fallback = "fallback", name
                return
            finally:
                running.running = False  # tasks and threads it started keep a reference
                IN_FALLBACK.reset(inside)
        if plan.escalate is not None:
            name, handler = plan.escalate
            try:
                await _settle(handler(run.summary()), awaits)
            except Exception as exc:  # noqa: BLE001 - a failing handler must not mask the error
                r.notes.append(f"escalation {name!r} failed: {type(exc).__name__}")
            r.escalated = name


async def _settle(value: Any, awaits: bool) -> Any:
    if not inspect.isawaitable(value):
        return value
    if awaits:
        return await value
    if inspect.iscoroutine(value):
        value.close()
    raise RecipeError("an async fallback or escalation handler cannot run in a sync call")


def _drive(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never suspends (the sync call's endgame) without an event loop."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RecipeError("the sync endgame suspended")


def _qualname(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)
