"""Synthesis: candidate recipes for a pattern (DESIGN §6 step 3).

:class:`RuleSynthesizer` is a rule library keyed on the error taxonomy and
parameterised by the pattern's statistics (a ``core.snapshot.pattern_row``
dict): observed latency, Retry-After hints, status mix. External synthesizers
(e.g. an LLM) plug in through the entry-point group ``gossipmind.synthesizers``
(:func:`load_plugins`). Whatever a synthesizer returns is data, and only data
that passes :func:`validate` leaves :func:`synthesize`:

- the recipe passes ``core.recipe.check_recipe`` and canonical encoding;
- its scope is the pattern's scope, ``service.operation`` (:func:`recipe_scope`):
  the fold rejects a fix for any other scope (protocol.md §6.5);
- no retry for ``validation``, ``auth`` or ``not_found`` patterns, and never
  a retry on ``validation`` errors: a schema drift is not fixed by retrying;
- a non-idempotent scope (policy ``non_idempotent_scopes``) is retried only
  with an ``idempotency_key`` step;
- a retry only for a transient pattern, never of ``unknown`` errors
  (:func:`retry_problem`);
- a retry of ``rate_limited`` errors, or of a pattern whose failures came
  with Retry-After, has a ``respect_retry_after`` step (:func:`ignores_retry_after`);
- a retry backs off, from at least ``MIN_BACKOFF_MS``, with jitter
  (:func:`backoff_problem`);
- the risk is raised to the policy's floor for the recipe.

Rejected output is reported with its reason and never executed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol, runtime_checkable

from gossipmind.core import encoding
from gossipmind.core.errors import GossipmindError, SchemaError
from gossipmind.core.fold import pattern_scope
from gossipmind.core.policy import Policy, max_risk, scope_covers
from gossipmind.core.recipe import (
    MAX_BUDGET_MS,
    MAX_STEP_MS,
    RISKS,
    check_recipe,
    steps_by_type,
)
from gossipmind.core.schema import fix_id
from gossipmind.learn.drill import MAX_AMPLIFICATION_PM, drill
from gossipmind.learn.rank import rank
from gossipmind.learn.simulator import FaultModel, observed_latency_ms, observed_retry_after_ms

__all__ = [  # ``rank`` is re-exported: the node re-ranks fixes with it
    "ENTRY_POINT_GROUP",
    "Candidate",
    "Rejection",
    "RuleSynthesizer",
    "Synthesis",
    "Synthesizer",
    "backoff_problem",
    "ignores_retry_after",
    "retry_problem",
    "is_non_idempotent",
    "load_plugins",
    "propose_body",
    "rank",
    "recipe_scope",
    "synthesize",
    "validate",
]

ENTRY_POINT_GROUP = "gossipmind.synthesizers"
NO_RETRY_CLASSES = frozenset({"auth", "not_found", "validation"})
ESCALATION_TARGET = "operator"  # the escalation handler name agents register by convention
KEY_HEADER = "Idempotency-Key"
MAX_CANDIDATES = 8
MAX_FALLBACKS = 3  # a candidate's chain of fallbacks is at most this long
MAX_RATIONALE = 2048


@dataclass(frozen=True)
class Candidate:
    recipe: dict[str, Any]
    risk: str  # "low" | "medium" | "high"
    rationale: str
    synthesizer: str = ""
    # Proposed instead once this candidate's fix was proposed and ended rejected or
    # revoked (a verifier whose view of the pattern differs judged it over a cap):
    # the learner looks at such a pattern again (node/learner.py).
    fallback: Candidate | None = None


@runtime_checkable
class Synthesizer(Protocol):
    name: str

    def propose(self, pattern: dict[str, Any], policy: Policy) -> Sequence[Any]:
        """Candidates (or maps with ``recipe``, ``risk``, ``rationale`` and optionally
        ``fallback``, proposed if this one's fix ends rejected) for ``pattern``."""
        ...


@dataclass(frozen=True)
class Rejection:
    synthesizer: str
    reason: str


@dataclass
class Synthesis:
    candidates: list[Candidate] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def recipe_scope(pattern: Mapping[str, Any]) -> str:
    """``service.operation`` (or, when that would not fit a 64-char name, its longest
    prefix that ends before a ``.`` and fits): the only scope a fix for ``pattern``
    may have (``core.fold.pattern_scope``)."""
    service, operation = str(pattern["service"]), str(pattern.get("operation", ""))
    return pattern_scope(service, operation) if operation else service


def is_non_idempotent(scope: str, policy: Policy) -> bool:
    return any(scope_covers(s, scope) for s in policy.non_idempotent_scopes)


def _clamp(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, x))


def _retry(attempts: int, base: int, cap: int, jitter: str, on: Iterable[str]) -> dict[str, Any]:
    base = _clamp(base, 1, 60_000)
    return {
        "type": "retry",
        "max_attempts": attempts,
        "base_ms": base,
        "cap_ms": _clamp(cap, base, MAX_STEP_MS),
        "jitter": jitter,
        "on": sorted(set(on)),
    }


def _recipe(scope: str, steps: list[dict[str, Any]], budget: int | None) -> dict[str, Any]:
    recipe: dict[str, Any] = {"scope": scope, "steps": steps}
    if budget is not None:
        recipe["budget_ms"] = _clamp(budget, 1, MAX_BUDGET_MS)
    return recipe


# ----------------------------------------------------------------------------- rules


class RuleSynthesizer:
    """The built-in rule library; one candidate per pattern (or none)."""

    name = "rules"

    def propose(self, pattern: dict[str, Any], policy: Policy) -> list[Candidate]:
        rule = _RULES.get(str(pattern.get("error_class")))
        if rule is None:
            return []
        scope = recipe_scope(pattern)
        made = rule(pattern, scope)
        if made is None:
            return []
        cand = self._candidate(made, scope, policy)
        if pattern.get("error_class") == "rate_limited":
            # one attempt more where its drill stays under the verifiers' cap (a
            # short Retry-After): the 4th attempt of a call that failed 3 times
            made_more = _rate_limited_rule(pattern, scope, RATE_LIMIT_MORE)
            more = self._candidate(made_more, scope, policy)
            if _within_caps(more.recipe, pattern, policy):
                # within the cap on this view, but near it: a verifier whose view
                # differs a little may find it over, and the 3 attempts are still a fix
                return [replace(more, fallback=cand)]
        return [cand]

    def _candidate(
        self,
        made: tuple[list[dict[str, Any]], int | None, str],
        scope: str,
        policy: Policy,
    ) -> Candidate:
        steps, budget, why = made
        if any(s["type"] == "retry" for s in steps) and is_non_idempotent(scope, policy):
            steps.append({"type": "idempotency_key", "header": KEY_HEADER})
            why += (
                f" {scope} is not idempotent: every attempt carries the same"
                f" {KEY_HEADER}, so a retried call is never applied twice."
            )
        recipe = _recipe(scope, steps, budget)
        return Candidate(recipe, policy.risk_floor(recipe), why[:MAX_RATIONALE], self.name)


def _within_caps(recipe: dict[str, Any], pattern: Mapping[str, Any], policy: Policy) -> bool:
    """Whether ``recipe``'s drill on ``pattern``'s model (seeded by its fix id, as
    every verifier drills it) beats the baseline within ``MAX_AMPLIFICATION_PM``."""
    fid = fix_id(bytes(pattern.get("pattern", b"")), recipe)
    idempotent = not is_non_idempotent(recipe["scope"], policy)
    result = drill(recipe, FaultModel.from_pattern(pattern), fid, idempotent=idempotent)
    return result.better_than_baseline and result.amplification_pm <= MAX_AMPLIFICATION_PM


_Rule = Callable[[Mapping[str, Any], str], tuple[list[dict[str, Any]], int | None, str] | None]


def _per_attempt(pattern: Mapping[str, Any]) -> int:
    lat = observed_latency_ms(pattern)
    return _clamp(2 * lat, 1000, 30_000) if lat else 5000


def _who(pattern: Mapping[str, Any]) -> str:
    return f"{pattern.get('count', 0)} failures from {pattern.get('reporters', 0)} agents"


# A transient failure of one kind often comes back as another on retry (a timeout
# under load becomes a 429 or a 503): recipes for transient classes retry them all,
# and respect Retry-After whenever the service sends one.
TRANSIENT = ("connection", "rate_limited", "server_error", "timeout")
RESPECT_DEFAULT_MS = 10_000
# The 5xx rule's breaker opens after this many consecutive failed attempts. Above
# 3 attempts x 3 calls, so scattered errors (a drill fails 30 % of attempts at
# random) practically never open it and refuse calls that would have succeeded:
# with 5 they did, and about 1 pattern in 20 lost its drill and never got a fix.
BREAKER_THRESHOLD = 10
# The rate-limit rule retries 4 times when that recipe's drill stays under the
# verifiers' amplification cap (a short Retry-After), else 3: under a Retry-After
# of a few seconds most calls of a busy service arrive inside a window, and a
# 4th attempt took the drill's amplification over the cap, so no fix was ever
# accepted. (With 30 % of attempts failing at random, 3 attempts leave 2.7 % of
# calls failed and 4 leave 0.8 %: docs/learning.md §6.)
RATE_LIMIT_ATTEMPTS = 3
RATE_LIMIT_MORE = 4


def _timeout_rule(p: Mapping[str, Any], scope: str) -> tuple[list[dict[str, Any]], int, str]:
    observed = observed_latency_ms(p)
    ms = _clamp(observed, 1000, 30_000) if observed else 10_000
    retry = _retry(3, 200, 2000, "full", TRANSIENT)
    budget = 3 * ms + 2 * max(retry["cap_ms"], RESPECT_DEFAULT_MS)
    why = (
        f"Timeouts ({_who(p)}; failing calls took ~{observed or 'unknown'} ms): bound each"
        f" attempt at {ms} ms and retry transient errors up to 3 times with full-jitter"
        f" exponential backoff (200..2000 ms), waiting as asked when the service sends"
        f" Retry-After, within {budget} ms in total."
    )
    steps = [
        {"type": "respect_retry_after", "max_wait_ms": RESPECT_DEFAULT_MS},
        retry,
        {"type": "timeout", "ms": ms},
    ]
    return steps, budget, why


def _rate_limited_rule(
    p: Mapping[str, Any], scope: str, attempts: int = RATE_LIMIT_ATTEMPTS
) -> tuple[list[dict[str, Any]], int, str]:
    hint = observed_retry_after_ms(p)
    max_wait = _clamp(hint * 3 // 2, 1000, 120_000) if hint else 30_000
    base = _clamp(hint, 500, 10_000) if hint else 1000
    retry = _retry(attempts, base, max(base * 8, max_wait), "equal", TRANSIENT)
    budget = attempts * _per_attempt(p) + (attempts - 1) * max(max_wait, retry["cap_ms"])
    seen = f"Retry-After up to {hint} ms was seen" if hint else "no Retry-After was seen"
    why = (
        f"Rate limited (429; {_who(p)}; {seen}): wait what the service asks (at most"
        f" {max_wait} ms, never sooner), otherwise back off from {base} ms with equal jitter;"
        f" at most {attempts} attempts within {budget} ms. Hammering a rate"
        " limiter only extends it."
    )
    return [{"type": "respect_retry_after", "max_wait_ms": max_wait}, retry], budget, why


def _server_error_rule(p: Mapping[str, Any], scope: str) -> tuple[list[dict[str, Any]], int, str]:
    hint = observed_retry_after_ms(p)
    retry = _retry(3, 250, 4000, "full", ["server_error"])  # a wider list trips the breaker
    breaker = {"type": "circuit_breaker", "failure_threshold": BREAKER_THRESHOLD}
    steps = [retry, breaker | {"reset_ms": 30_000}]
    max_wait = 0
    if hint:
        max_wait = _clamp(hint * 3 // 2, 1000, 60_000)
        steps.insert(0, {"type": "respect_retry_after", "max_wait_ms": max_wait})
    budget = 3 * _per_attempt(p) + 2 * max(retry["cap_ms"], max_wait)
    statuses = ", ".join(sorted(p.get("status") or {})) or "5xx"
    why = (
        f"Server errors ({statuses}; {_who(p)}): retry up to 3 times with full-jitter backoff"
        f" (250..4000 ms) within {budget} ms, and open a circuit breaker after"
        f" {BREAKER_THRESHOLD} consecutive failures for 30 s so an outage is not made worse"
        " by retry storms."
    )
    return steps, budget, why


def _connection_rule(p: Mapping[str, Any], scope: str) -> tuple[list[dict[str, Any]], int, str]:
    retry = _retry(4, 100, 2000, "full", TRANSIENT)
    budget = 4 * _per_attempt(p) + 3 * max(retry["cap_ms"], RESPECT_DEFAULT_MS)
    why = (
        f"Connection failures ({_who(p)}): usually transient; retry up to 4 times with"
        f" full-jitter backoff (100..2000 ms), waiting as asked when the service sends"
        f" Retry-After, within {budget} ms."
    )
    return [{"type": "respect_retry_after", "max_wait_ms": RESPECT_DEFAULT_MS}, retry], budget, why


def _auth_rule(p: Mapping[str, Any], scope: str) -> tuple[list[dict[str, Any]], None, str]:
    why = (
        f"Authentication/authorization failures ({_who(p)}): retrying with the same credentials"
        f" cannot succeed. Do not retry; refresh or fix the credentials, and escalate to"
        f" {ESCALATION_TARGET!r}."
    )
    return [{"type": "escalate", "to": ESCALATION_TARGET}], None, why


def _validation_rule(p: Mapping[str, Any], scope: str) -> tuple[list[dict[str, Any]], None, str]:
    why = (
        f"Validation errors ({_who(p)}): the request or the response does not match the"
        " expected schema (a schema drift). Retrying sends the same bad data again and can"
        f" never fix it. Do not retry; escalate to {ESCALATION_TARGET!r} with the details."
    )
    return [{"type": "escalate", "to": ESCALATION_TARGET}], None, why


_RULES: dict[str, _Rule] = {
    "timeout": _timeout_rule,
    "rate_limited": _rate_limited_rule,
    "server_error": _server_error_rule,
    "connection": _connection_rule,
    "auth": _auth_rule,
    "validation": _validation_rule,
}


# ------------------------------------------------------------------------ validation


def retry_problem(recipe: Mapping[str, Any], pattern: Mapping[str, Any]) -> str | None:
    """Why ``recipe``'s retry cannot be judged to help ``pattern``, or None.

    A drill fails attempts at random whatever their class, so it shows any
    retry helping. That holds for the transient classes (:data:`TRANSIENT`);
    a conflict (a duplicate, a failed precondition) or an unknown failure (a
    ``KeyError`` of a changed schema) usually fails the same way again, and a
    retry of it multiplies calls that cannot succeed.
    """
    retry = next((s for s in recipe["steps"] if s["type"] == "retry"), None)
    if retry is None:
        return None
    error_class = pattern.get("error_class")
    if error_class not in TRANSIENT:
        return f"{error_class} failures are not transient: a drill cannot show a retry helping"
    if "unknown" in retry["on"]:
        return "retries unknown errors, which a drill cannot show to be transient"
    return None


# A retry waits at least this long before its first retry, with jitter: retries 1 ms
# apart beat a drill's baseline within the amplification cap and, ranked by drill
# success, outranked the network's own recipes (the s10 learning review), while
# in an outage every agent's retries hit the service at once.
MIN_BACKOFF_MS = 100


def backoff_problem(recipe: Mapping[str, Any]) -> str | None:
    """Why ``recipe``'s retry does not back off, or None: its first wait must be at
    least ``MIN_BACKOFF_MS`` and jittered (``full`` or ``equal``)."""
    retry = next((s for s in recipe["steps"] if s["type"] == "retry"), None)
    if retry is None:
        return None
    if retry["base_ms"] < MIN_BACKOFF_MS:
        return (
            f"retries after {retry['base_ms']} ms: a retry must back off from at least"
            f" {MIN_BACKOFF_MS} ms"
        )
    if retry["jitter"] == "none":
        return "retries without jitter: every agent's retries of an outage would come at once"
    return None


def ignores_retry_after(recipe: Mapping[str, Any], pattern: Mapping[str, Any]) -> str | None:
    """Why ``recipe`` would retry ``pattern``'s calls without waiting as the service
    asks, or None: a retry of ``rate_limited`` errors, or of a pattern whose
    failures came with Retry-After, needs a ``respect_retry_after`` step."""
    steps = {s["type"]: s for s in recipe["steps"]}
    retry = steps.get("retry")
    if retry is None or "respect_retry_after" in steps:
        return None
    if "rate_limited" in retry["on"]:
        return "retries rate_limited errors without a respect_retry_after step"
    if observed_retry_after_ms(pattern):  # what the rules see: one author cannot set it
        return "retries without a respect_retry_after step, but the service sends Retry-After"
    return None


def validate(
    raw: Any, pattern: Mapping[str, Any], policy: Policy, synthesizer: str, *, _depth: int = 0
) -> Candidate:
    """Check one synthesizer output; return it as a :class:`Candidate` or raise SchemaError.
    Its fallbacks (``fallback``: a candidate or map, at most :data:`MAX_FALLBACKS`
    deep) are checked alike: a bad one rejects the candidate."""
    recipe: Any
    risk: Any
    rationale: Any
    fallback: Any
    if isinstance(raw, Candidate):
        recipe, risk, rationale, fallback = raw.recipe, raw.risk, raw.rationale, raw.fallback
    elif isinstance(raw, Mapping):
        unknown = sorted(set(raw) - {"recipe", "risk", "rationale", "fallback"})
        if unknown:
            raise SchemaError(unknown[0], "unknown field in a candidate")
        recipe, risk, rationale = raw.get("recipe"), raw.get("risk", "low"), raw.get("rationale")
        fallback = raw.get("fallback")
    else:
        raise SchemaError("", f"a candidate is a Candidate or a map, got {type(raw).__name__}")
    checked = None
    if fallback is not None:
        if _depth >= MAX_FALLBACKS:
            raise SchemaError("fallback", f"more than {MAX_FALLBACKS} fallbacks in a chain")
        try:
            checked = validate(fallback, pattern, policy, synthesizer, _depth=_depth + 1)
        except SchemaError as exc:
            raise SchemaError("fallback", str(exc)) from exc
    check_recipe(recipe)
    encoding.encode(recipe)  # canonical data only: no floats, no foreign types
    if risk not in RISKS:
        raise SchemaError("risk", f"must be one of {', '.join(RISKS)}")
    if not isinstance(rationale, str) or not 0 < len(rationale) <= MAX_RATIONALE:
        raise SchemaError("rationale", f"a text of 1..{MAX_RATIONALE} characters is required")
    if not pattern.get("service") or not pattern.get("operation"):
        raise SchemaError("pattern", "the pattern's service and operation are required")
    scope = recipe_scope(pattern)
    if recipe["scope"] != scope:
        raise SchemaError(
            "recipe.scope",
            f"{recipe['scope']!r} is not the pattern's scope {scope!r} (service.operation)",
        )
    steps = steps_by_type(recipe)
    retry = steps.get("retry")
    if retry is not None and pattern.get("error_class") in NO_RETRY_CLASSES:
        raise SchemaError("recipe.steps", f"{pattern.get('error_class')} errors are never retried")
    if retry is not None and "validation" in retry["on"]:
        raise SchemaError("recipe.steps", "retrying validation errors is never a fix")
    problem = (
        retry_problem(recipe, pattern)
        or ignores_retry_after(recipe, pattern)
        or backoff_problem(recipe)
    )
    if problem is not None:
        raise SchemaError("recipe.steps", problem)
    keyless = retry is not None and "idempotency_key" not in steps
    if keyless and is_non_idempotent(recipe["scope"], policy):
        raise SchemaError(
            "recipe.steps", f"retries non-idempotent {recipe['scope']!r} without a key"
        )
    risk = max_risk(risk, policy.risk_floor(recipe))
    return Candidate(recipe, risk, rationale, synthesizer, checked)


def synthesize(
    pattern: dict[str, Any], policy: Policy, synthesizers: Sequence[Synthesizer] | None = None
) -> Synthesis:
    """Candidates from every synthesizer (default: the rules), validated and deduplicated."""
    out = Synthesis()
    seen: set[bytes] = set()
    for synth in synthesizers if synthesizers is not None else [RuleSynthesizer()]:
        name = str(getattr(synth, "name", type(synth).__name__))[:64]
        try:
            raw = synth.propose(pattern, policy)
        except Exception as exc:  # noqa: BLE001 - a failing synthesizer is reported, never fatal
            out.rejected.append(Rejection(name, f"propose() raised {type(exc).__name__}: {exc}"))
            continue
        if not isinstance(raw, list | tuple):
            out.rejected.append(Rejection(name, f"propose() returned {type(raw).__name__}"))
            continue
        for i, item in enumerate(raw):
            if i >= MAX_CANDIDATES:
                out.rejected.append(Rejection(name, f"more than {MAX_CANDIDATES} candidates"))
                break
            try:
                cand = validate(item, pattern, policy, name)
            except GossipmindError as exc:
                out.rejected.append(Rejection(name, f"candidate {i}: {exc}"))
                continue
            key = encoding.encode(cand.recipe)
            if key not in seen:
                seen.add(key)
                out.candidates.append(cand)
    return out


def load_plugins(
    group: str = ENTRY_POINT_GROUP, eps: Iterable[EntryPoint] | None = None
) -> tuple[list[Synthesizer], list[Rejection]]:
    """Synthesizers registered under the entry-point ``group`` (a class or an instance each)."""
    found: list[Synthesizer] = []
    errors: list[Rejection] = []
    for ep in sorted(eps if eps is not None else entry_points(group=group), key=lambda e: e.name):
        try:
            obj = ep.load()
            synth = obj() if isinstance(obj, type) else obj
        except Exception as exc:  # noqa: BLE001 - a broken plug-in is reported, never fatal
            errors.append(Rejection(ep.name, f"cannot load: {type(exc).__name__}: {exc}"))
            continue
        if not isinstance(synth, Synthesizer) or not isinstance(synth.name, str):
            errors.append(Rejection(ep.name, "not a Synthesizer (needs name: str and propose())"))
            continue
        found.append(synth)
    return found, errors


def propose_body(
    candidate: Candidate, pattern: bytes, drill: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The ``fix.propose`` body for a candidate (``drill``: ``DrillResult.to_body()``)."""
    body: dict[str, Any] = {
        "pattern": pattern,
        "recipe": candidate.recipe,
        "risk": candidate.risk,
        "rationale": candidate.rationale,
        "origin": "synth",
    }
    if candidate.synthesizer:
        body["synthesizer"] = candidate.synthesizer[:64]
    if drill is not None:
        body["drill"] = dict(drill)
    return body
