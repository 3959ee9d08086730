"""What the SDK hands the agent: an accepted :class:`Fix`, the client's :class:`ClientStats`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gossipmind.learn.breaker import retry_after_ms, status_of


@dataclass(frozen=True)
class Fix:
    """An accepted fix as the agent applies it."""

    id: bytes
    pattern: bytes
    recipe: dict[str, Any]
    rationale: str
    risk: str
    attempts: int = 0
    successes: int = 0
    service: str = ""
    operation: str = ""
    drill_bp: int = 0  # the verifiers' drill success: ties on outcomes break on it
    non_idempotent: bool = False  # the policy lists its scope as non-idempotent

    @property
    def retried_classes(self) -> frozenset[str]:
        steps = self.recipe.get("steps", [])
        return frozenset(c for st in steps if st.get("type") == "retry" for c in st.get("on", []))

    @property
    def has_idempotency_key(self) -> bool:
        return any(s.get("type") == "idempotency_key" for s in self.recipe.get("steps", []))

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Fix:
        recipe = doc["recipe"]
        if "non_idempotent" in doc:
            unsafe = doc["non_idempotent"] is True
        else:  # a node older than the field (7a06e9e and before: docs/operations.md §10)
            # never says; a fix for a scope its policy lists as non-idempotent carries an
            # idempotency key (the synthesizer adds one, a keyless retry there is high
            # risk), so a keyed fix is taken for one: a keyless attempt is not retried
            steps = recipe.get("steps", []) if isinstance(recipe, dict) else []
            unsafe = any(isinstance(s, dict) and s.get("type") == "idempotency_key" for s in steps)
        return cls(
            bytes.fromhex(doc["fix"]),
            bytes.fromhex(doc["pattern"]),
            recipe,
            doc.get("rationale", ""),
            doc.get("risk", "low"),
            int(doc.get("attempts", 0)),
            int(doc.get("successes", 0)),
            str(doc.get("service", "")),
            str(doc.get("operation", "")),
            int(doc.get("drill_bp", 0)),
            unsafe,
        )


@dataclass
class ClientStats:
    reports_sent: int = 0  # taken by the node at the call
    reports_queued: int = 0  # put in the queue (the outbox thread sends them)
    reports_refused: int = 0  # refused by the node (4xx, kept in errors): never sent again
    reports_unconfirmed: int = 0  # given up unanswered (sent: the node may have them)
    reports_resent: int = 0  # sends again of reports whose answer did not come (same id)
    fixes_applied: int = 0
    recoveries: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    stream_connected: bool = False
    errors: list[str] = field(default_factory=list)


def describe(exc: BaseException) -> tuple[str, str, int | None, int | None]:
    """(exception type name, message, HTTP status, Retry-After ms) of an error."""
    t = type(exc)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    return name, str(exc), status_of(exc), retry_after_ms(exc)
