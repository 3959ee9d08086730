"""Request validation and JSON conversion for the local API (shared by server and SDK)."""

from __future__ import annotations

import re
from typing import Any

from gossipmind.core.errors import SchemaError

MAX_BODY = 64 * 1024
MAX_TEXT = 8 * 1024


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def hex_id(value: Any, field: str) -> bytes:
    """A 32-byte id as 64 hex digits, either case (like the CLI), nothing else: no
    whitespace or separators (which ``bytes.fromhex`` would skip)."""
    if not isinstance(value, str) or not re.fullmatch("[0-9a-fA-F]{64}", value):
        raise SchemaError(field, "must be a 64-character hex id")
    return bytes.fromhex(value)


def _text(doc: dict[str, Any], key: str, *, required: bool, max_len: int = 256) -> str | None:
    if key not in doc or doc[key] is None:
        if required:
            raise SchemaError(key, "is required")
        return None
    v = doc[key]
    if not isinstance(v, str):
        raise SchemaError(key, f"must be a string, got {type(v).__name__}")
    if len(v) > max_len:
        raise SchemaError(key, f"is longer than {max_len} characters")
    return v


def _int(doc: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    if key not in doc or doc[key] is None:
        return None
    v = doc[key]
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise SchemaError(key, f"must be an integer between {lo} and {hi}")
    return v


FAILURE_FIELDS = {
    "service",
    "operation",
    "exc_type",
    "message",
    "status",
    "context",
    "latency_ms",
    "retry_after_ms",
}


def failure_from_json(doc: Any) -> dict[str, Any]:
    """Validate a failure report; return the keyword arguments of ``learn.patterns.Failure``."""
    if not isinstance(doc, dict):
        raise SchemaError("", "the body must be a JSON object")
    unknown = sorted(set(doc) - FAILURE_FIELDS)
    if unknown:
        raise SchemaError(unknown[0], "unknown field")
    return {
        "service": _text(doc, "service", required=True, max_len=128),
        "operation": _text(doc, "operation", required=True, max_len=128),
        "exc_type": _text(doc, "exc_type", required=False, max_len=256) or "Exception",
        "message": _text(doc, "message", required=False, max_len=MAX_TEXT) or "",
        "status": _int(doc, "status", 100, 599),
        "context": doc.get("context"),
        "latency_ms": _int(doc, "latency_ms", 0, 2**31 - 1),
        "retry_after_ms": _int(doc, "retry_after_ms", 0, 2**31 - 1),
    }


def outcome_from_json(doc: Any) -> tuple[bytes, int, int]:
    if not isinstance(doc, dict):
        raise SchemaError("", "the body must be a JSON object")
    unknown = sorted(set(doc) - {"fix", "attempts", "successes"})
    if unknown:
        raise SchemaError(unknown[0], "unknown field")
    fix = hex_id(doc.get("fix"), "fix")
    attempts = _int(doc, "attempts", 1, 1_000_000)
    successes = _int(doc, "successes", 0, 1_000_000)
    if attempts is None or successes is None:
        raise SchemaError("attempts" if attempts is None else "successes", "is required")
    if successes > attempts:
        raise SchemaError("successes", "cannot exceed attempts")
    return fix, attempts, successes


def fix_summary(row: dict[str, Any]) -> dict[str, Any]:
    """What an agent needs to apply a fix (JSON-ready)."""
    out: dict[str, Any] = jsonable(
        {
            "fix": row["fix"],
            "pattern": row["pattern"],
            "status": row["status"],
            "risk": row["risk"],
            "recipe": row["recipe"],
            "rationale": row["rationale"],
            "attempts": row["attempts"],
            "successes": row["successes"],
        }
    )
    return out
