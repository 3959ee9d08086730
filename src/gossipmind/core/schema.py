"""Body schemas of the ten v1 kinds (docs/protocol.md §4).

``check_body(kind, body)`` raises :class:`SchemaError` naming the field and the
problem, or returns silently. Schemas are closed: unknown fields are errors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from gossipmind.core import checks as c
from gossipmind.core import encoding
from gossipmind.core.errors import SchemaError
from gossipmind.core.ops import digest
from gossipmind.core.policy import Policy
from gossipmind.core.recipe import ERROR_CLASSES, RISKS, STEP_TYPES, check_recipe

ROLES = ("member", "teacher", "verifier", "admin")
MAX_COUNTER = 1_000_000_000
_id = c.blob(32)
_ms = c.integer(0, 2**53)
_window = c.array(_ms, min_len=2, max_len=2)


@functools.lru_cache(maxsize=8192)
def pattern_id(service: str, operation: str, error_class: str, template: str) -> bytes:
    """The content address of a pattern (its fingerprint)."""
    return digest(
        b"gossipmind/pattern/1\x00", encoding.encode([service, operation, error_class, template])
    )


def fix_id(pattern: bytes, recipe: dict[str, Any]) -> bytes:
    """Content address of a fix: the same recipe for the same pattern merges."""
    return digest(b"gossipmind/fix/1\x00", encoding.encode([pattern, recipe]))


def _window_ok(w: list[int], path: str) -> None:
    if w[0] > w[1]:
        raise SchemaError(path, "window start must not be after its end")


def _genesis(b: dict[str, Any]) -> None:
    doc = c.record(
        b,
        "",
        {"name": c.text(64, min_len=1), "nonce": c.blob(16), "policy": c.any_map(64)},
    )
    Policy.from_body(doc["policy"])


def _grant(b: dict[str, Any]) -> None:
    doc = c.record(
        b,
        "",
        {"member": _id, "role": c.one_of(*ROLES)},
        {
            "tier": c.integer(1, 3),
            "scopes": c.sorted_unique(c.name(), min_len=1, max_len=64),
            "name": c.text(64),
        },
    )
    if doc["role"] == "verifier":
        for key in ("tier", "scopes"):
            if key not in doc:
                raise SchemaError(key, "is required for a verifier grant")
    else:
        for key in ("tier", "scopes"):
            if key in doc:
                raise SchemaError(key, f"only a verifier grant has {key}")


def _revoke(b: dict[str, Any]) -> None:
    c.record(b, "", {"member": _id, "retroactive": c.boolean, "reason": c.text(512)})


_STATS = {
    "latency_ms_sum": c.integer(0, 2**53),
    "latency_n": c.integer(0, MAX_COUNTER),
    "retry_after_ms_max": c.integer(0, 2**31),
    "retry_after_n": c.integer(0, MAX_COUNTER),
    "status": c.any_map(32),
}


_REPORT = {
    "pattern": _id,
    "service": c.name(64),
    "operation": c.name(64),
    "error_class": c.one_of(*ERROR_CLASSES),
    "template": c.text(1024),
    "shape": c.text(1024),
    "count": c.integer(1, MAX_COUNTER),
    "window": _window,
    "stats": c.any_map(len(_STATS)),
}
_status_count = c.integer(1, MAX_COUNTER)


def _report(b: dict[str, Any]) -> None:
    doc = c.record(b, "", _REPORT)
    _window_ok(doc["window"], "window")
    stats = c.record(doc["stats"], "stats", _STATS)
    for code, n in stats["status"].items():
        if not (len(code) == 3 and code.isascii() and code.isdigit()):
            raise SchemaError("stats.status", f"{c.show(code)} is not a 3-digit status code")
        _status_count(n, "stats.status")
    if stats["latency_n"] > doc["count"] or stats["retry_after_n"] > doc["count"]:
        raise SchemaError("stats", "sample counts cannot exceed count")
    expected = pattern_id(doc["service"], doc["operation"], doc["error_class"], doc["template"])
    if doc["pattern"] != expected:
        raise SchemaError("pattern", "does not match service/operation/error_class/template")


_DRILL = {
    "runs": c.integer(1, 1_000_000),
    "success_bp": c.integer(0, 10_000),
    "baseline_success_bp": c.integer(0, 10_000),
    "amplification_pm": c.integer(0, 1_000_000),
    "added_latency_ms": c.integer(0, 2**31),
}


def _propose(b: dict[str, Any]) -> None:
    doc = c.record(
        b,
        "",
        {
            "pattern": _id,
            "recipe": c.any_map(4),
            "risk": c.one_of(*RISKS),
            "rationale": c.text(2048),
            "origin": c.one_of("synth", "human"),
        },
        {"drill": c.any_map(len(_DRILL) + 1), "synthesizer": c.text(64)},
    )
    check_recipe(doc["recipe"])
    if "drill" in doc:
        c.record(doc["drill"], "drill", _DRILL, {"model": c.any_map(16)})


def _attest(b: dict[str, Any]) -> None:
    c.record(
        b,
        "",
        {
            "fix": _id,
            "scope": c.name(64),
            "verdict": c.one_of("accept", "reject"),
            "reasons": c.array(c.text(256), max_len=16),
        },
        {"evidence": c.any_map(32)},
    )


def _outcome(b: dict[str, Any]) -> None:
    doc = c.record(
        b,
        "",
        {
            "fix": _id,
            "attempts": c.integer(1, MAX_COUNTER),
            "successes": c.integer(0, MAX_COUNTER),
            "window": _window,
        },
    )
    _window_ok(doc["window"], "window")
    if doc["successes"] > doc["attempts"]:
        raise SchemaError("successes", "cannot exceed attempts")


def _fix_revoke(b: dict[str, Any]) -> None:
    c.record(b, "", {"fix": _id, "scope": c.name(64), "reason": c.text(512, min_len=1)})


def check_constraint(x: Any, path: str) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise SchemaError(path, "a constraint is a map")
    op = x.get("op")
    step = c.one_of(*STEP_TYPES)
    if op in ("<=", ">=", "="):
        return c.record(x, path, {"op": c.one_of(op), "field": c.name(64), "value": c.scalar})
    if op == "require_step":
        return c.record(x, path, {"op": c.one_of(op), "step": step}, {"when": step})
    if op == "forbid_step":
        return c.record(x, path, {"op": c.one_of(op), "step": step})
    if op == "allowed_fallbacks":
        return c.record(
            x, path, {"op": c.one_of(op), "targets": c.sorted_unique(c.name(), max_len=64)}
        )
    raise SchemaError(
        f"{path}.op", "must be one of <=, >=, =, require_step, forbid_step, allowed_fallbacks"
    )


def _goal_set(b: dict[str, Any]) -> None:
    c.record(
        b,
        "",
        {
            "title": c.text(128, min_len=1),
            "scope": c.name(64),
            "constraints": c.array(check_constraint, max_len=32),
            "priority": c.integer(0, 1000),
            "retired": c.boolean,
        },
        {"goal": _id, "description": c.text(2048)},
    )


def _goal_review(b: dict[str, Any]) -> None:
    c.record(
        b,
        "",
        {
            "goal": _id,
            "version": _id,
            "verdict": c.one_of("approve", "reject"),
            "comment": c.text(1024),
        },
    )


_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "net.genesis": _genesis,
    "member.grant": _grant,
    "member.revoke": _revoke,
    "pattern.report": _report,
    "fix.propose": _propose,
    "fix.attest": _attest,
    "fix.outcome": _outcome,
    "fix.revoke": _fix_revoke,
    "goal.set": _goal_set,
    "goal.review": _goal_review,
}


def check_body(kind: str, body: dict[str, Any]) -> None:
    """Raise SchemaError unless ``body`` is a valid body of ``kind``, and nothing else.

    A body comes from anyone (it is checked before the signature): any other
    exception a body makes a check raise (a bug in a check, e.g. an unhashable
    value where a str is expected) is a SchemaError too, so that no body can
    make ingest raise. Running out of memory is not a property of the body."""
    try:
        check = _CHECKS[kind]
    except (KeyError, TypeError):
        raise SchemaError("kind", f"unknown kind {c.show(kind)}") from None
    try:
        check(body)
    except (SchemaError, MemoryError):
        raise
    except Exception as exc:  # any other: see the docstring
        raise SchemaError(
            "", f"{kind} body cannot be checked: {type(exc).__name__}: {exc}"
        ) from exc
