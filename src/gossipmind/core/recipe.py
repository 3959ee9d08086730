"""The fix recipe: a bounded, declarative list of steps (DESIGN §6).

A recipe is data. Nothing in it names code to run: ``fallback`` and
``escalate`` name targets that the agent registered locally, and ``set_param``
may only touch parameters on the agent's local allow-list.
"""

from __future__ import annotations

import re
from typing import Any

from gossipmind.core import checks as c
from gossipmind.core import encoding
from gossipmind.core.errors import SchemaError

ERROR_CLASSES = (
    "auth",
    "conflict",
    "connection",
    "not_found",
    "rate_limited",
    "server_error",
    "timeout",
    "unknown",
    "validation",
)
STEP_TYPES = (
    "retry",
    "respect_retry_after",
    "timeout",
    "idempotency_key",
    "set_param",
    "fallback",
    "circuit_breaker",
    "escalate",
)
RISKS = ("low", "medium", "high")
MAX_ATTEMPTS = 10
MAX_STEP_MS = 300_000
MAX_BUDGET_MS = 600_000

_error_class = c.one_of(*ERROR_CLASSES)

STEP_FIELDS: dict[str, tuple[dict[str, c.Checker], dict[str, c.Checker]]] = {
    "retry": (
        {
            "max_attempts": c.integer(2, MAX_ATTEMPTS),
            "base_ms": c.integer(1, 60_000),
            "cap_ms": c.integer(1, MAX_STEP_MS),
            "jitter": c.one_of("none", "full", "equal"),
            "on": c.sorted_unique(_error_class, min_len=1, max_len=len(ERROR_CLASSES)),
        },
        {},
    ),
    "respect_retry_after": ({"max_wait_ms": c.integer(1, MAX_STEP_MS)}, {}),
    "timeout": ({"ms": c.integer(1, MAX_STEP_MS)}, {}),
    "idempotency_key": ({"header": c.text(64, min_len=1)}, {}),
    "set_param": ({"name": c.name(64), "value": c.scalar}, {}),
    "fallback": ({"target": c.name(64)}, {}),
    "circuit_breaker": (
        {"failure_threshold": c.integer(1, 1000), "reset_ms": c.integer(1, 3_600_000)},
        {},
    ),
    "escalate": ({"to": c.name(64)}, {}),
}


# The op schema lets an idempotency_key step name any header (protocol.md §4.11),
# but a recipe comes from the network and the executor sets that header on the
# agent's own request: one naming Authorization or Cookie would replace the
# agent's credentials. Verifiers reject, and executors skip, any other name.
_KEY_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_KEY_HEADER_WORDS = ("idem", "request-id")


def key_header_problem(name: object) -> str | None:
    """Why ``name`` may not be the header of an ``idempotency_key`` step, or None.

    Allowed: an HTTP token of letters, digits and dashes (at most 64) that says
    what it is: it contains ``idem`` or ``request-id`` (any case), e.g.
    ``Idempotency-Key``, ``X-Idempotent-Key``, ``Idem-Key``, ``PayPal-Request-Id``.
    """
    if not isinstance(name, str) or not _KEY_HEADER.fullmatch(name):
        return f"header {c.show(name)} is not a plain header name (letters, digits, dashes)"
    if not any(w in name.lower() for w in _KEY_HEADER_WORDS):
        return (
            f"header {c.show(name)} does not name an idempotency key (it must contain "
            "'idem' or 'request-id')"
        )
    return None


def check_step(step: Any, path: str) -> dict[str, Any]:
    if not isinstance(step, dict):
        raise SchemaError(path, f"a step is a map, got {type(step).__name__}")
    kind = step.get("type")
    if type(kind) is not str or kind not in STEP_FIELDS:  # a list or map is unhashable
        raise SchemaError(f"{path}.type", f"unknown step type {c.show(kind)}; one of {STEP_TYPES}")
    required, optional = STEP_FIELDS[kind]
    out = c.record(step, path, {"type": c.one_of(kind), **required}, optional)
    if kind == "retry" and out["cap_ms"] < out["base_ms"]:
        raise SchemaError(f"{path}.cap_ms", "must be >= base_ms")
    return out


def check_recipe(recipe: Any, path: str = "recipe") -> dict[str, Any]:
    """Validate a recipe; return it unchanged if valid, else raise SchemaError."""
    out = c.record(
        recipe,
        path,
        {"scope": c.name(64), "steps": c.array(check_step, min_len=1, max_len=8)},
        {"budget_ms": c.integer(1, MAX_BUDGET_MS)},
    )
    seen: set[str] = set()
    for i, step in enumerate(out["steps"]):
        if step["type"] in seen:
            raise SchemaError(f"{path}.steps[{i}].type", f"step {step['type']!r} appears twice")
        seen.add(step["type"])
    if "retry" in seen and "budget_ms" not in out:
        raise SchemaError(f"{path}.budget_ms", "is required when the recipe retries")
    return recipe  # type: ignore[no-any-return]


def steps_by_type(recipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["type"]: s for s in recipe["steps"]}


def canonical(recipe: dict[str, Any]) -> bytes:
    return encoding.encode(recipe)


def worst_case_attempts(recipe: dict[str, Any]) -> int:
    retry = steps_by_type(recipe).get("retry")
    return int(retry["max_attempts"]) if retry else 1
