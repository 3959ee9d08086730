"""The OpenAPI 3.1 description of the local API (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

from gossipmind.core.snapshot import FIX_STATUSES

_HEX = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}
_ERR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_PATTERN_Q = {"name": "pattern", "in": "query", "required": True, "schema": _HEX}
_LIMIT_Q = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 100000},
}


def _ok(schema: dict[str, Any], code: str = "200") -> dict[str, Any]:
    return {
        code: {"description": "ok", "content": {"application/json": {"schema": schema}}},
        "401": _ERR,
        "404": _ERR,
        "413": _ERR,
        "422": _ERR,
        "503": _ERR,
    }


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


FIX = _obj(
    fix=_HEX,
    pattern=_HEX,
    status={"type": "string"},
    risk={"type": "string", "enum": ["low", "medium", "high"]},
    recipe={"type": "object"},
    rationale={"type": "string"},
    attempts={"type": "integer"},
    successes={"type": "integer"},
    drill_bp={
        "type": "integer",
        "description": "lowest drill success (basis points) the accepting verifiers "
        "measured; ranks fixes whose outcomes tie",
    },
    non_idempotent={
        "type": "boolean",
        "description": "the policy lists the fix's scope as non-idempotent: the SDK never "
        "retries a call whose failed attempt carried no idempotency key",
    },
)
REPORT_ID = {
    "type": "string",
    "pattern": "^[0-9a-f]{32}$",
    "description": "optional: 16 random bytes (lowercase hex) the sender gives the report "
    "when it creates it, and sends again with it if no answer came; the node counts a "
    "report id once (for at least an hour), answering a duplicate as it answered the first. "
    "Local to the node: never in an op. A bad id is refused with 400 (nothing counted)",
}
_BAD_ID = {"400": _ERR}
FAILURE = {
    "type": "object",
    "required": ["service", "operation"],
    "additionalProperties": False,
    "properties": {
        "service": {"type": "string", "maxLength": 128},
        "operation": {"type": "string", "maxLength": 128},
        "exc_type": {"type": "string", "maxLength": 256},
        "message": {"type": "string", "maxLength": 8192},
        "status": {"type": "integer", "minimum": 100, "maximum": 599},
        "context": {"description": "any JSON; only its shape (keys and types) leaves the node"},
        "latency_ms": {"type": "integer", "minimum": 0},
        "retry_after_ms": {"type": "integer", "minimum": 0},
        "id": REPORT_ID,
    },
}
OUTCOME = {
    "type": "object",
    "required": ["fix", "attempts", "successes"],
    "additionalProperties": False,
    "properties": {
        "fix": _HEX,
        "attempts": {"type": "integer", "minimum": 1, "maximum": 1000000},
        "successes": {"type": "integer", "minimum": 0, "maximum": 1000000},
        "id": REPORT_ID,
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "gossipmind node API",
        "version": "1",
        "description": "Local API of a gossipmind node: 127.0.0.1 only, bearer token from "
        "api.token (mode 0600) in the node's data dir.",
    },
    "servers": [{"url": "http://127.0.0.1"}],
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": _obj(error={"type": "string"}, field={"type": "string"}),
            "Fix": FIX,
            "Failure": FAILURE,
            "Outcome": OUTCOME,
        },
    },
    "paths": {
        "/v1/status": {"get": {"summary": "Node status", "responses": _ok({"type": "object"})}},
        "/v1/metrics": {
            "get": {
                "summary": "Node status in the Prometheus text format (0.0.4)",
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _ERR,
                    "503": _ERR,
                },
            }
        },
        "/v1/failures": {
            "post": {
                "summary": "Report a failure; the node reduces it to a pattern (raw data stays)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": FAILURE}},
                },
                "responses": _ok(
                    _obj(
                        pattern=_HEX,
                        error_class={"type": "string"},
                        template={"type": "string"},
                        fix={"oneOf": [FIX, {"type": "null"}]},
                    ),
                    "202",
                )
                | _BAD_ID,
            }
        },
        "/v1/failures/count": {
            "get": {
                "summary": "Fleet-wide failure count and distinct reporters of a pattern",
                "parameters": [_PATTERN_Q],
                "responses": _ok(
                    _obj(
                        pattern=_HEX,
                        count={"type": "integer"},
                        reporters={"type": "integer"},
                        local_unsent={"type": "integer"},
                    )
                ),
            }
        },
        "/v1/fix": {
            "get": {
                "summary": "The best accepted fix for a pattern (404 if none); with canary=1, "
                "else a provisional one (accepted by a verifier, rejected by none)",
                "parameters": [
                    _PATTERN_Q,
                    {"name": "canary", "in": "query", "schema": {"enum": ["0", "1"]}},
                ],
                "responses": _ok(FIX),
            }
        },
        "/v1/outcomes": {
            "post": {
                "summary": "Report how applying a fix went",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": OUTCOME}},
                },
                "responses": _ok(_obj(queued={"type": "boolean"}), "202") | _BAD_ID,
            }
        },
        "/v1/patterns": {
            "get": {
                "summary": "Failure patterns",
                "parameters": [_LIMIT_Q],
                "responses": _ok({"type": "array", "items": {"type": "object"}}),
            }
        },
        "/v1/fixes": {
            "get": {
                "summary": "Fixes, optionally by status and pattern",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(FIX_STATUSES)},
                    },
                    {"name": "pattern", "in": "query", "schema": _HEX},
                    _LIMIT_Q,
                ],
                "responses": _ok({"type": "array", "items": {"type": "object"}}),
            }
        },
        "/v1/ops": {
            "post": {
                "summary": "Sign and publish an op with the node's identity (used by the CLI "
                "while the node holds the store); 403 if the node is not authorized for it",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _obj(kind={"type": "string"}, body={"type": "string"})
                        }
                    },
                },
                "responses": _ok(_obj(op=_HEX), "201") | {"403": _ERR, "409": _ERR},
            }
        },
        "/v1/events": {
            "get": {
                "summary": "Server-sent events: `fix` for every accepted fix, then each fix "
                "status transition; `ready` after the initial snapshot",
                "responses": {"200": {"description": "text/event-stream"}, "401": _ERR},
            }
        },
    },
}
