"""From a recipe to a plan: what the agent allows, what one call will do, what happened.

:class:`LocalRegistry` holds what the agent allows recipes to use (fallbacks,
escalation handlers, parameters); :func:`build_plan` checks a recipe and turns
it, against that registry and the function called, into a :class:`Plan` (the
steps that apply, with their figures, and the ones skipped and why);
:class:`Execution` is the record of one logical call. The executor
(:mod:`gossipmind.learn.executor`) carries out the plan.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from gossipmind.core.policy import scope_covers
from gossipmind.core.recipe import check_recipe, key_header_problem, steps_by_type
from gossipmind.learn.headers import param_kind, with_key

T = TypeVar("T")
Scalar = int | str | bool


class FallbackRun:
    """One fallback's run; ``running`` until it returns. The context holds this object,
    not a bool: a task or thread the fallback starts copies the context, and a copied
    ``True`` outlived the fallback (a background refresh it started got no fallback
    for good); a copied reference sees the run end."""

    __slots__ = ("running",)

    def __init__(self) -> None:
        self.running = True


# Set while a recipe's fallback runs (in its task, thread, and the attempts it starts).
# A fallback that is itself a decorated call runs its own fix without a fallback:
# fallbacks do not nest, so two calls that fall back to each other cannot loop.
IN_FALLBACK: contextvars.ContextVar[FallbackRun | None] = contextvars.ContextVar(
    "gossipmind_in_fallback", default=None
)


def in_fallback() -> bool:
    """Whether this call is made while a fallback runs (by it, or by what it started)."""
    run = IN_FALLBACK.get()
    return run is not None and run.running


# ------------------------------------------------------------------------- registry


class LocalRegistry:
    """What the agent allows recipes to use: fallbacks, escalation handlers, parameters.

    One registry serves every call of the client, whatever its service. ``scope=``
    limits a registration to the recipes of that scope and its sub-scopes
    (``"search"`` covers ``search.query``): without it, a fix for ``payments.charge``
    naming the search cache's fallback would get its value returned as the charge's.
    """

    def __init__(self) -> None:
        self.fallbacks: dict[str, Callable[..., Any]] = {}
        self.escalations: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self.params: dict[str, Callable[[Scalar], bool] | None] = {}
        self.scopes: dict[tuple[str, str], str] = {}  # (step type, name) -> its only scope

    def _limit(self, step: str, name: str, scope: str | None) -> None:
        if scope is None:
            self.scopes.pop((step, name), None)
        else:
            self.scopes[(step, name)] = scope

    def out_of_scope(self, step: str, name: str, scope: str) -> str | None:
        """Why the registration ``name`` of ``step`` may not serve a recipe of ``scope``."""
        only = self.scopes.get((step, name))
        if only is None or scope_covers(only, scope):
            return None
        return f"{name!r} is registered for scope {only!r} only"

    def add_fallback(self, name: str, fn: Callable[..., Any], *, scope: str | None = None) -> None:
        """``fn`` is called with the original arguments when the recipe falls back to ``name``."""
        self.fallbacks[name] = fn
        self._limit("fallback", name, scope)

    def add_escalation(
        self, name: str, handler: Callable[[dict[str, Any]], Any], *, scope: str | None = None
    ) -> None:
        """``handler(summary)`` gets a redacted summary (no messages, no arguments)."""
        self.escalations[name] = handler
        self._limit("escalate", name, scope)

    def allow_param(
        self,
        name: str,
        check: Callable[[Scalar], bool] | None = None,
        *,
        scope: str | None = None,
    ) -> None:
        """Let ``set_param`` set keyword ``name``; ``check(value)`` may veto a value."""
        self.params[name] = check
        self._limit("set_param", name, scope)


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
    in_doubt: bool = False
    """A non-idempotent call failed after an attempt of it was cut at its limit: cut
    is abandoned, not undone, so the provider may still apply that attempt."""

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
class Plan:
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
    deadlines: bool = True  # may an attempt be cut at the budget's deadline?
    retries_allowed: bool = False
    idempotent: bool = True  # as the agent declared the call
    breaker: tuple[int, int] | None = None  # (failure_threshold, reset_ms)
    fallback: tuple[str, Callable[..., Any]] | None = None
    escalate: tuple[str, Callable[[dict[str, Any]], Any]] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    prior: BaseException | None = None


def build_plan(
    registry: LocalRegistry,
    key_factory: Callable[[], str],
    recipe: dict[str, Any],
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    idempotent: bool,
    prior: BaseException | None,
    deadlines: bool,
) -> Plan:
    """Check ``recipe`` (``RecipeError``) and plan one call of ``fn(**kwargs)`` under it.

    ``deadlines=False``: attempts are never cut (the ``timeout`` step is skipped).
    """
    check_recipe(recipe)
    steps = steps_by_type(recipe)
    record: Execution[Any] = Execution(scope=recipe["scope"])
    plan = Plan(record, recipe["scope"], budget_ms=recipe.get("budget_ms"), deadlines=deadlines)
    plan.kwargs, plan.prior, plan.idempotent = dict(kwargs), prior, idempotent
    applied = record.applied

    def skip(step: str, reason: str) -> None:
        record.skipped.append(Skipped(step, reason))

    if (s := steps.get("set_param")) is not None:
        name, value = s["name"], s["value"]
        check = registry.params.get(name)
        if name not in registry.params:
            skip("set_param", f"{name!r} is not on the local allow-list")
        elif (off := registry.out_of_scope("set_param", name, plan.scope)) is not None:
            skip("set_param", off)
        elif check is not None and not check(value):
            skip("set_param", f"value for {name!r} refused locally")
        elif param_kind(fn, name) not in ("named", "varkw"):
            skip("set_param", f"the function takes no {name!r}")
        else:
            plan.kwargs[name] = value
            applied.append("set_param")
    key_in_effect, why = False, None
    if (s := steps.get("idempotency_key")) is not None:
        new_key: Callable[[], str] = key_factory
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
        if in_fallback():
            skip("fallback", "the call is made by a fallback: fallbacks do not nest")
        elif (fb := registry.fallbacks.get(s["target"])) is None:
            skip("fallback", f"no local fallback named {s['target']!r}")
        elif (off := registry.out_of_scope("fallback", s["target"], plan.scope)) is not None:
            skip("fallback", off)
        else:
            plan.fallback = (s["target"], fb)
            applied.append("fallback")
    if (s := steps.get("escalate")) is not None:
        if (handler := registry.escalations.get(s["to"])) is None:
            skip("escalate", f"no local escalation named {s['to']!r}")
        elif (off := registry.out_of_scope("escalate", s["to"], plan.scope)) is not None:
            skip("escalate", off)
        else:
            plan.escalate = (s["to"], handler)
            applied.append("escalate")
    return plan
