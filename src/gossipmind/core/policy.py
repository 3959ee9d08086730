"""The network policy, fixed in the genesis op (docs/protocol.md §5).

Every field has a documented default; a genesis body always carries the full,
explicit policy (``Policy.to_body``), so replicas never disagree on defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gossipmind.core import checks as c
from gossipmind.core.recipe import RISKS, STEP_TYPES, steps_by_type

RISK_RANK = {r: i for i, r in enumerate(RISKS)}


def max_risk(*risks: str) -> str:
    return max(risks, key=RISK_RANK.__getitem__)


def scope_covers(granted: str, scope: str) -> bool:
    """``*`` covers everything; ``payments`` covers ``payments`` and ``payments.charge``."""
    return granted in ("*", scope) or scope.startswith(granted + ".")


@dataclass(frozen=True)
class Quorum:
    count: int  # distinct accepting verifiers
    tier: int  # at least one of them has this tier or higher


_DEFAULT_QUORUM = {
    "low": Quorum(1, 1),
    "medium": Quorum(2, 2),
    "high": Quorum(1, 3),
}


@dataclass(frozen=True)
class Policy:
    open_membership: bool = False
    synthesis_threshold: int = 2
    report_cap: int = 10_000
    quorum: dict[str, Quorum] = field(default_factory=lambda: dict(_DEFAULT_QUORUM))
    scope_risk: dict[str, str] = field(default_factory=lambda: {"payments": "medium"})
    step_risk: dict[str, str] = field(
        default_factory=lambda: {"set_param": "medium", "fallback": "medium"}
    )
    non_idempotent_scopes: tuple[str, ...] = ("payments",)
    revoke_min_tier: int = 2
    goal_review_min_tier: int = 2
    evidence_min_reporters: int = 3
    evidence_min_success_bp: int = 8000

    def to_body(self) -> dict[str, Any]:
        return {
            "open_membership": self.open_membership,
            "synthesis_threshold": self.synthesis_threshold,
            "report_cap": self.report_cap,
            "quorum": {k: {"count": q.count, "tier": q.tier} for k, q in self.quorum.items()},
            "scope_risk": dict(self.scope_risk),
            "step_risk": dict(self.step_risk),
            "non_idempotent_scopes": sorted(self.non_idempotent_scopes),
            "revoke_min_tier": self.revoke_min_tier,
            "goal_review_min_tier": self.goal_review_min_tier,
            "evidence_min_reporters": self.evidence_min_reporters,
            "evidence_min_success_bp": self.evidence_min_success_bp,
        }

    @classmethod
    def from_body(cls, body: Any, path: str = "policy") -> Policy:
        risk = c.one_of(*RISKS)
        quorum = c.any_map(3)
        doc = c.record(
            body,
            path,
            {
                "open_membership": c.boolean,
                "synthesis_threshold": c.integer(1, 1_000_000),
                "report_cap": c.integer(1, 1_000_000),
                "quorum": quorum,
                "scope_risk": c.any_map(256),
                "step_risk": c.any_map(len(STEP_TYPES)),
                "non_idempotent_scopes": c.sorted_unique(c.name(), max_len=256),
                "revoke_min_tier": c.integer(1, 3),
                "goal_review_min_tier": c.integer(1, 3),
                "evidence_min_reporters": c.integer(1, 1_000_000),
                "evidence_min_success_bp": c.integer(0, 10_000),
            },
        )
        quorums: dict[str, Quorum] = {}
        for level in RISKS:
            if level not in doc["quorum"]:
                raise c.fail(f"{path}.quorum.{level}", "is required")
            q = c.record(
                doc["quorum"][level],
                f"{path}.quorum.{level}",
                {"count": c.integer(1, 100), "tier": c.integer(1, 3)},
            )
            quorums[level] = Quorum(q["count"], q["tier"])
        if len(doc["quorum"]) != len(RISKS):
            raise c.fail(f"{path}.quorum", f"keys must be exactly {', '.join(RISKS)}")
        for scope, level in doc["scope_risk"].items():
            c.name()(scope, f"{path}.scope_risk")
            risk(level, f"{path}.scope_risk.{scope}")
        for step, level in doc["step_risk"].items():
            c.one_of(*STEP_TYPES)(step, f"{path}.step_risk")
            risk(level, f"{path}.step_risk.{step}")
        return cls(
            open_membership=doc["open_membership"],
            synthesis_threshold=doc["synthesis_threshold"],
            report_cap=doc["report_cap"],
            quorum=quorums,
            scope_risk=dict(doc["scope_risk"]),
            step_risk=dict(doc["step_risk"]),
            non_idempotent_scopes=tuple(doc["non_idempotent_scopes"]),
            revoke_min_tier=doc["revoke_min_tier"],
            goal_review_min_tier=doc["goal_review_min_tier"],
            evidence_min_reporters=doc["evidence_min_reporters"],
            evidence_min_success_bp=doc["evidence_min_success_bp"],
        )

    def risk_floor(self, recipe: dict[str, Any]) -> str:
        """The lowest risk a proposer may claim for ``recipe``; see protocol §6.5."""
        scope = recipe["scope"]
        levels = ["low"]
        for granted, level in self.scope_risk.items():
            if scope_covers(granted, scope):
                levels.append(level)
        steps = steps_by_type(recipe)
        levels.extend(self.step_risk[t] for t in steps if t in self.step_risk)
        non_idempotent = any(scope_covers(s, scope) for s in self.non_idempotent_scopes)
        if non_idempotent and "retry" in steps and "idempotency_key" not in steps:
            levels.append("high")
        return max_risk(*levels)
