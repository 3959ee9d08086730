"""Request validation and JSON conversion for the local API (shared by server and SDK)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from gossipmind.core.errors import GossipmindError, SchemaError
from gossipmind.learn.rank import drill_bp
from gossipmind.learn.shape import MAX_DEPTH, MAX_ITEMS, MAX_KEYS, MAX_NODES

MAX_BODY = 64 * 1024
MAX_TEXT = 8 * 1024  # a failure's message
MAX_NAME = 128  # its service and operation
MAX_TYPE = 256  # its exception type
MAX_MS = 2**31 - 1
MAX_KEY = 48  # a longer context key is never kept by the shape (it shows as ``*``)


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


REPORT_ID_HEX = 32  # a report id: 16 random bytes, as lowercase hex


class BadReportId(GossipmindError):
    """A report's ``id`` that is not 32 lowercase hex digits (answered 400)."""


def report_id(doc: Any) -> tuple[bytes | None, Any]:
    """The SDK's id of a report (None if it has none: old SDKs, curl) and the body
    without it. An id that is not 32 lowercase hex digits raises BadReportId."""
    if not isinstance(doc, dict) or "id" not in doc:
        return None, doc
    rest = dict(doc)
    rid = rest.pop("id")
    if not isinstance(rid, str) or len(rid) != REPORT_ID_HEX or rid.strip("0123456789abcdef"):
        raise BadReportId(
            f"bad report id {str(rid)[:40]!r}: an id is {REPORT_ID_HEX} lowercase hex digits "
            "(16 random bytes), or absent"
        )
    return bytes.fromhex(rid), rest


def failure_from_json(doc: Any) -> dict[str, Any]:
    """Validate a failure report; return the keyword arguments of ``learn.patterns.Failure``."""
    if not isinstance(doc, dict):
        raise SchemaError("", "the body must be a JSON object")
    unknown = sorted(set(doc) - FAILURE_FIELDS)
    if unknown:
        raise SchemaError(unknown[0], "unknown field")
    return {
        "service": _text(doc, "service", required=True, max_len=MAX_NAME),
        "operation": _text(doc, "operation", required=True, max_len=MAX_NAME),
        "exc_type": _text(doc, "exc_type", required=False, max_len=MAX_TYPE) or "Exception",
        "message": _text(doc, "message", required=False, max_len=MAX_TEXT) or "",
        "status": _int(doc, "status", 100, 599),
        "context": doc.get("context"),
        "latency_ms": _int(doc, "latency_ms", 0, MAX_MS),
        "retry_after_ms": _int(doc, "retry_after_ms", 0, MAX_MS),
    }


def sendable_failure(
    *,
    service: Any,
    operation: Any,
    exc_type: Any,
    message: Any,
    status: Any,
    context: Any,
    latency_ms: Any,
    retry_after_ms: Any,
) -> dict[str, Any]:
    """A failure's fields as :func:`failure_from_json` accepts them, so the node never
    refuses the SDK's report (and the SDK, reducing the same fields, computes the
    node's pattern).

    Texts are cut to the limits (``message`` to :data:`MAX_TEXT` characters,
    further if the body would exceed :data:`MAX_BODY`); a status or a time the
    pattern would ignore is left out, a time over the range capped; the context
    becomes its :func:`context_skeleton`. A text that is not a string stays as it
    is (reducing it raises a precise ``SchemaError``).
    """
    fields = {
        "service": _cut(service, MAX_NAME),
        "operation": _cut(operation, MAX_NAME),
        "exc_type": _cut(exc_type, MAX_TYPE),
        "message": _cut(message, MAX_TEXT),
        "status": _status(status),
        "context": context_skeleton(context) if context is not None else None,
        "latency_ms": _ms(latency_ms),
        "retry_after_ms": _ms(retry_after_ms),
    }
    text = fields["message"]
    if fields["context"] is None and (not isinstance(text, str) or len(text) <= MAX_TEXT // 2):
        return fields  # at most ~60 KiB of JSON, whatever the characters
    budget = MAX_NODES
    for _ in range(32):  # each round halves the message or the context
        try:
            size = len(json.dumps({k: v for k, v in fields.items() if v is not None}))
        except (TypeError, ValueError):
            return fields  # a text that is not a string: reducing it says so
        if size <= MAX_BODY:
            break
        text = fields["message"]
        if isinstance(text, str) and len(text) > 256:
            fields["message"] = text[: len(text) // 2]
        elif budget > 1:
            budget //= 2
            fields["context"] = context_skeleton(context, budget)
        else:
            fields["context"] = None
    return fields


def _status(x: Any) -> int | None:
    """An HTTP status as the pattern keeps it: None if not one."""
    if isinstance(x, int) and not isinstance(x, bool) and 100 <= x <= 599:
        return int(x)
    return None


def _cut(text: Any, limit: int) -> Any:
    return text[:limit] if isinstance(text, str) else text


def _ms(x: Any) -> int | None:
    """A time in ms as the pattern keeps it (``learn.patterns``): None if not one."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    if math.isnan(x) or x < 0:
        return None
    return MAX_MS if math.isinf(x) else min(int(x), MAX_MS)


def context_skeleton(value: Any, budget: int = MAX_NODES) -> Any:
    """A context as JSON of the same shape (``learn.shape``), holding none of its values.

    The node keeps only the shape of a context (keys and value types), so that is
    all the SDK sends: every string becomes ``""``, every number ``0`` or
    ``0.0``, every bool ``false``. A value JSON has no type for counts as a
    string (bytes, a date, any other object) or a list (a set, a tuple). A key is
    kept if it is an ASCII string of at most :data:`MAX_KEY` characters; any other
    key (which the shape shows as ``*`` anyway) gets a stand-in. Within the
    shape's bounds (depth :data:`~gossipmind.learn.shape.MAX_DEPTH`, the first
    :data:`~gossipmind.learn.shape.MAX_ITEMS` items of a list, the first
    :data:`~gossipmind.learn.shape.MAX_KEYS` keys of a map, ``budget`` values in
    all), so its JSON stays small. ``None`` if the value cannot be read (say it
    changed size while walked).
    """
    left = budget

    def walk(v: Any, depth: int) -> Any:
        nonlocal left
        left -= 1
        if left < 0 or v is None:
            return None
        if isinstance(v, bool):
            return False
        if isinstance(v, int):
            return 0
        if isinstance(v, float):
            return 0.0
        if isinstance(v, Mapping):
            return {} if depth >= MAX_DEPTH else walk_map(v, depth)
        if isinstance(v, list | tuple):
            return [] if depth >= MAX_DEPTH else [walk(x, depth + 1) for x in v[:MAX_ITEMS]]
        if isinstance(v, set | frozenset):
            items = [] if depth >= MAX_DEPTH else list(v)[:MAX_ITEMS]
            return [walk(x, depth + 1) for x in items]
        return ""  # str, bytes, and anything else: a string

    def walk_map(m: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        def order(k: object) -> tuple[int, str]:  # learn.shape's order
            return (0, k) if isinstance(k, str) else (1, type(k).__name__)

        out: dict[str, Any] = {}
        for i, k in enumerate(sorted(m.keys(), key=order)[:MAX_KEYS]):
            kept = isinstance(k, str) and len(k) <= MAX_KEY and k.isascii()
            out[k if kept else f"*\u00a4{i}"] = walk(m[k], depth + 1)
        return out

    try:
        return walk(value, 0)
    except Exception:  # noqa: BLE001 - a context that cannot be read is no context
        return None


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
            "drill_bp": drill_bp(row),  # the verifiers' figure: agents rank as nodes do
        }
    )
    return out
