"""Apply a fix recipe (DESIGN §6) to one logical call: sync, asyncio or trio.

A recipe is data: ``fallback``/``escalate`` targets are looked up by name in
the agent's :class:`LocalRegistry` (unknown → skipped and reported, never
imported) and ``set_param`` only sets names on its allow-list. Whatever their
order in the recipe, steps compose as: ``circuit_breaker`` guards each attempt,
``set_param``/``idempotency_key`` shape its arguments, ``timeout`` bounds it,
``retry`` (tenacity) with ``respect_retry_after`` decides whether and when to
try again; after the final failure ``fallback``, else ``escalate``.

Bounds: at most ``max_attempts`` attempts (1 without ``retry``); attempts and
waits fit in ``budget_ms`` (a wait that would reach it ends the call, an
attempt is cut at its deadline; the local fallback/escalation run after it);
a non-idempotent call is retried only if an idempotency key reaches it.

Idempotency key: one per logical call, the same on every attempt (a caller's
own ``idempotency_key=``, or ``step.header`` in any case in ``headers=``, wins),
passed as ``idempotency_key=`` if the function declares it, else as
``headers[step.header]`` if the caller passed ``headers=`` or the function
declares ``headers``; else the step is skipped.

Sync attempts with a time limit run in a worker thread and are abandoned, not
killed, when it passes (``breaker.SystemClock``); ``sync_timeouts=False`` keeps
them on the caller's thread (``timeout`` skipped, budget checked between
attempts). Time is injected (``Clock``/``AsyncClock``) for tests and drills.
"""

from __future__ import annotations

import functools
import inspect
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from tenacity import AsyncRetrying, RetryCallState, Retrying

from gossipmind.core.errors import RecipeError
from gossipmind.core.recipe import (
    ERROR_CLASSES,
    check_recipe,
    key_header_problem,
    steps_by_type,
)
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
from gossipmind.learn.headers import param_kind, with_key

T = TypeVar("T")
Scalar = int | str | bool


# ------------------------------------------------------------------------- registry


class LocalRegistry:
    """What the agent allows recipes to use: fallbacks, escalation handlers, parameters."""

    def __init__(self) -> None:
        self.fallbacks: dict[str, Callable[..., Any]] = {}
        self.escalations: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self.params: dict[str, Callable[[Scalar], bool] | None] = {}

    def add_fallback(self, name: str, fn: Callable[..., Any]) -> None:
        """``fn`` is called with the original arguments when the recipe falls back to ``name``."""
        self.fallbacks[name] = fn

    def add_escalation(self, name: str, handler: Callable[[dict[str, Any]], Any]) -> None:
        """``handler(summary)`` gets a redacted summary (no messages, no arguments)."""
        self.escalations[name] = handler

    def allow_param(self, name: str, check: Callable[[Scalar], bool] | None = None) -> None:
        """Let ``set_param`` set keyword ``name``; ``check(value)`` may veto a value."""
        self.params[name] = check


# ------------------------------------------------------------------------ the record


@dataclass(frozen=True)
class Skipped:
    step: str
    reason: str


@dataclass
class Execution(Generic[T]):
    """What happened to one logical call under a recipe."""

    scope: str
    outcome: str = "failed"  # "success" | "fallback" | "failed"
    value: T | None = None
    error: BaseException | None = None
    attempts: int = 0  # attempts of the primary call, including a ``prior_error``
    waited_ms: int = 0  # backoff / Retry-After waits
    elapsed_ms: int = 0  # attempts and waits (not the fallback or escalation)
    errors: list[str] = field(default_factory=list)  # error class of each failed attempt
    applied: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    stop: str = ""  # why the attempts ended
    idempotency_key: str | None = None
    fallback: str | None = None  # the fallback that produced the value
    escalated: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome in ("success", "fallback")

    def unwrap(self) -> T:
        """The value, or re-raise the call's final error."""
        if self.error is not None and not self.ok:
            raise self.error
        return cast(T, self.value)

    def summary(self) -> dict[str, Any]:
        """A redacted, JSON-safe account: classes and counts only, never messages or arguments."""
        keys = ("scope", "outcome", "attempts", "waited_ms", "elapsed_ms", "stop")
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["errors"], out["applied"] = list(self.errors), list(self.applied)
        out["error_type"] = type(self.error).__name__ if self.error is not None else None
        out["skipped"] = [[s.step, s.reason] for s in self.skipped]
        out["fallback"], out["escalated"] = self.fallback, self.escalated
        return out


# ------------------------------------------------------------------------ the plan


@dataclass
class _Plan:
    record: Execution[Any]
    scope: str
    max_attempts: int = 1
    on: frozenset[str] = frozenset()
    base_ms: int = 0
    cap_ms: int = 0
    jitter: str = "none"
    max_wait_ms: int | None = None
    timeout_ms: int | None = None
    budget_ms: int | None = None
    deadlines: bool = True  # may attempts be cut at a deadline?
    retries_allowed: bool = False
    breaker: tuple[int, int] | None = None  # (failure_threshold, reset_ms)
    fallback: tuple[str, Callable[..., Any]] | None = None
    escalate: tuple[str, Callable[[dict[str, Any]], Any]] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    prior: BaseException | None = None


class _Run(Generic[T]):
    """One logical call's state; its methods are tenacity's retry/wait/stop strategies."""

    def __init__(self, ex: Executor, plan: _Plan, now: Callable[[], float], key: Hashable) -> None:
        self.ex, self.plan, self.now, self.key = ex, plan, now, key
        self.record: Execution[T] = plan.record
        self.prior = plan.prior
        self.start = now()
        self.deadline = None if plan.budget_ms is None else self.start + plan.budget_ms
        self.last_class = ""
        self.last_hint: int | None = None
        self.next_wait = 0
        self.hint_too_long = False

    # -- attempts
    def begin_attempt(self) -> float | None:
        """Count an attempt; return its time limit in ms (None: unbounded)."""
        if self.prior is not None:
            prior, self.prior = self.prior, None
            self.record.attempts += 1
            self.failed(prior)
            raise prior
        p = self.plan
        if p.breaker is not None and not self.ex.breakers.allow(self.key, p.breaker[1]):
            raise CircuitOpen(f"circuit open for {self.key!r}")
        limit: float | None = p.timeout_ms if p.deadlines else None
        if self.deadline is not None and p.deadlines:
            left = self.deadline - self.now()
            if left <= 0:  # a real sleep overshot the budget: do not start the attempt
                raise AttemptTimeout("the budget ran out before the attempt")
            limit = left if limit is None else min(limit, left)
        self.record.attempts += 1
        return limit

    def call_kwargs(self) -> dict[str, Any]:
        kw = dict(self.plan.kwargs)
        if isinstance(kw.get("headers"), Mapping):
            kw["headers"] = dict(kw["headers"])
        return kw

    def failed(self, exc: BaseException) -> None:
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
            (isinstance(exc, CircuitOpen), "circuit_open"),
            (p.max_attempts <= 1, "no_retry"),
            (not p.retries_allowed, "non_idempotent"),
            (self.last_class not in p.on, f"not_retryable:{self.last_class}"),
        ):
            if refused:
                self.record.stop = reason
                return False
        return True

    def wait(self, rs: RetryCallState) -> float:
        p = self.plan
        exp = min(p.cap_ms, p.base_ms * 2 ** min(rs.attempt_number - 1, 30))
        rng = self.ex.rng
        if p.jitter == "full":
            wait = rng.randint(0, exp)
        elif p.jitter == "equal":
            wait = exp // 2 + rng.randint(0, exp - exp // 2)
        else:
            wait = exp
        if self.last_hint is not None and p.max_wait_ms is not None:
            self.hint_too_long = self.last_hint > p.max_wait_ms
            wait = max(wait, self.last_hint)
        self.next_wait = wait
        return wait / 1000.0

    def stop(self, rs: RetryCallState) -> bool:
        reason = ""
        resume = self.now() + self.next_wait
        if self.hint_too_long:
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
        else:
            r.outcome, r.error = "failed", error

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
    ) -> _Plan:
        check_recipe(recipe)
        steps = steps_by_type(recipe)
        record: Execution[Any] = Execution(scope=recipe["scope"])
        plan = _Plan(
            record, recipe["scope"], budget_ms=recipe.get("budget_ms"), deadlines=deadlines
        )
        plan.kwargs, plan.prior = dict(kwargs), prior
        applied = record.applied

        def skip(step: str, reason: str) -> None:
            record.skipped.append(Skipped(step, reason))

        if (s := steps.get("set_param")) is not None:
            name, value = s["name"], s["value"]
            check = self.registry.params.get(name)
            if name not in self.registry.params:
                skip("set_param", f"{name!r} is not on the local allow-list")
            elif check is not None and not check(value):
                skip("set_param", f"value for {name!r} refused locally")
            elif param_kind(fn, name) not in ("named", "varkw"):
                skip("set_param", f"the function takes no {name!r}")
            else:
                plan.kwargs[name] = value
                applied.append("set_param")
        key_in_effect, why = False, None
        if (s := steps.get("idempotency_key")) is not None:
            new_key: Callable[[], str] = self.key_factory
            if isinstance(own := kwargs.get("idempotency_key"), str) and own:
                new_key = functools.partial(str, own)  # the caller's own key wins
            if param_kind(fn, "idempotency_key") == "named":
                plan.kwargs["idempotency_key"] = key = new_key()
                key_in_effect = True
            elif (why := key_header_problem(s["header"])) is not None:
                skip("idempotency_key", why)  # never set Authorization, Cookie, ...
            elif isinstance(hdrs := kwargs.get("headers"), Mapping) or (
                hdrs is None and param_kind(fn, "headers") == "named"
            ):  # a key already in the caller's headers (any spelling) wins
                plan.kwargs["headers"], key = with_key(hdrs or {}, s["header"], new_key)
                key_in_effect = True
            if key_in_effect:
                record.idempotency_key = key
                applied.append("idempotency_key")
            elif why is None:
                skip("idempotency_key", "the function takes neither idempotency_key= nor headers=")
        if (s := steps.get("retry")) is not None:
            plan.max_attempts = s["max_attempts"]
            plan.on = frozenset(s["on"])
            plan.base_ms, plan.cap_ms, plan.jitter = s["base_ms"], s["cap_ms"], s["jitter"]
            if idempotent or key_in_effect:
                plan.retries_allowed = prior is None or idempotent
            if plan.retries_allowed:
                applied.append("retry")
            elif prior is not None and key_in_effect:
                skip("retry", "non-idempotent: the failed call had no key")
            else:
                skip("retry", "non-idempotent call without an idempotency key")
        if (s := steps.get("respect_retry_after")) is not None:
            if plan.retries_allowed:
                plan.max_wait_ms = s["max_wait_ms"]
                applied.append("respect_retry_after")
            else:
                skip("respect_retry_after", "the call is not retried")
        if (s := steps.get("timeout")) is not None:
            if deadlines:
                plan.timeout_ms = s["ms"]
                applied.append("timeout")
            else:
                skip("timeout", "sync timeouts are disabled in this executor")
        if (s := steps.get("circuit_breaker")) is not None:
            plan.breaker = (s["failure_threshold"], s["reset_ms"])
            applied.append("circuit_breaker")
        if (s := steps.get("fallback")) is not None:
            if (fb := self.registry.fallbacks.get(s["target"])) is None:
                skip("fallback", f"no local fallback named {s['target']!r}")
            else:
                plan.fallback = (s["target"], fb)
                applied.append("fallback")
        if (s := steps.get("escalate")) is not None:
            if (handler := self.registry.escalations.get(s["to"])) is None:
                skip("escalate", f"no local escalation named {s['to']!r}")
            else:
                plan.escalate = (s["to"], handler)
                applied.append("escalate")
        return plan

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
        plan = self._plan(recipe, fn, kwargs, idempotent, prior_error, self.sync_timeouts)
        key = breaker_key if breaker_key is not None else (plan.scope, _qualname(fn))
        run: _Run[T] = _Run(self, plan, clock.now_ms, key)

        def attempt() -> T:
            limit = run.begin_attempt()
            call = functools.partial(fn, *args, **run.call_kwargs())
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
            _drive(self._endgame(run, args, kwargs, awaits=False))
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
        plan = self._plan(recipe, fn, kwargs, idempotent, prior_error, True)
        key = breaker_key if breaker_key is not None else (plan.scope, _qualname(fn))
        run: _Run[T] = _Run(self, plan, clock.now_ms, key)

        async def attempt() -> T:
            limit = run.begin_attempt()
            call = functools.partial(fn, *args, **run.call_kwargs())
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
            await self._endgame(run, args, kwargs, awaits=True)
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
        if plan.fallback is not None:
            name, fb = plan.fallback
            try:
                r.value = await _settle(fb(*args, **kwargs), awaits)
            except Exception as exc:  # noqa: BLE001 - fallback failed too: keep the call's error
                r.notes.append(f"fallback {name!r} failed: {type(exc).__name__}")
            else:
                r.outcome, r.fallback = "fallback", name
                return
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
