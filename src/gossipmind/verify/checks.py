"""What a verifier checks before it signs a verdict on a fix (pure).

A verdict is ``accept``, ``reject`` (with reasons) or ``None`` — wait: not
enough evidence yet. Checks: the recipe's schema and bounds; its scope is the
pattern's (``service.operation``: the calls the fix is applied to); step types
that cannot fix the failure class (a retry never fixes a validation error);
retries of non-idempotent operations without an idempotency key; retries
that do not wait as the service asks (Retry-After); a drill (seed
= fix id, fault model = the pattern's, ``FaultModel.from_pattern``) that must
beat the baseline and keep call amplification under a cap, and the same drill
through an outage (``learn.drill.outage_model``) under the same cap, and a
bound on the latency it adds (``added_latency_limit``). The
proposer's published figures are compared and recorded, never trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from gossipmind.core.errors import GossipmindError
from gossipmind.core.fold import weighted_outcomes
from gossipmind.core.policy import Policy
from gossipmind.core.recipe import ERROR_CLASSES, check_recipe, key_header_problem, steps_by_type
from gossipmind.core.schema import fix_id
from gossipmind.learn.drill import MAX_AMPLIFICATION_PM, DrillResult, drill, outage_model
from gossipmind.learn.rank import wilson_lower_bound_bp
from gossipmind.learn.simulator import FaultModel
from gossipmind.learn.synth import (
    RuleSynthesizer,
    backoff_problem,
    ignores_retry_after,
    is_non_idempotent,
    recipe_scope,
    retry_problem,
)

NEVER_RETRY = frozenset({"validation", "auth", "not_found"})
# A fix may add at most this much latency per call in its drill, beyond twice
# what the network's own rule recipe for the pattern adds (added_latency_limit):
# waits of minutes pass every other check (they beat the baseline and amplify
# nothing), and a member could get them accepted, and ranked first.
ADDED_LATENCY_SLACK_MS = 5000
# Pattern classes drilled without the outage: a rate limit is already a run of
# refusals in the pattern's own model (every call in a Retry-After window fails),
# where retries that do not wait as asked amplify and lose to the baseline.
NO_OUTAGE_DRILL = frozenset({"rate_limited"})


@dataclass
class Verdict:
    accept: bool
    reasons: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "accept" if self.accept else "reject"


def published_model(fix: Mapping[str, Any]) -> FaultModel | str | None:
    """The fault model published with a fix's drill: None if none, a string if invalid."""
    published = fix.get("drill")
    if not isinstance(published, Mapping) or "model" not in published:
        return None
    try:
        return FaultModel.from_body(published["model"])
    except GossipmindError as exc:
        return f"the published fault model is invalid: {exc}"
    except (TypeError, ValueError) as exc:  # defence in depth: never let a peer's data crash us
        return f"the published fault model is invalid: {exc}"


def reproduce(fix: Mapping[str, Any], pattern: Mapping[str, Any], policy: Policy) -> DrillResult:
    """Drill a fix's recipe against the fault model of its pattern, seeded by the fix id.

    The model comes from the pattern's statistics (``FaultModel.from_pattern``),
    never from the proposal: a proposer who could choose the model could make a
    recipe that does not fix the pattern look good, or a good one look bad.
    """
    model = FaultModel.from_pattern(pattern)
    idempotent = not is_non_idempotent(fix["recipe"]["scope"], policy)
    return drill(fix["recipe"], model, bytes(fix["fix"]), idempotent=idempotent)


def reproduce_outage(
    fix: Mapping[str, Any], pattern: Mapping[str, Any], policy: Policy
) -> DrillResult:
    """:func:`reproduce` through an outage: the service down, failing with the
    pattern's class, for half of the drill (``learn.drill.outage_model``)."""
    error_class = str(pattern.get("error_class"))
    model = outage_model(
        FaultModel.from_pattern(pattern),
        error_class if error_class in ERROR_CLASSES else "unknown",
    )
    idempotent = not is_non_idempotent(fix["recipe"]["scope"], policy)
    return drill(fix["recipe"], model, bytes(fix["fix"]), idempotent=idempotent)


def added_latency_limit(pattern: Mapping[str, Any], policy: Policy) -> int:
    """The most latency per call a fix for ``pattern`` may add in its drill:
    twice what the rule synthesizer's recipe for it adds (drilled on the same
    model, seeded by that recipe's own fix id), plus ``ADDED_LATENCY_SLACK_MS``.
    A class the rules have no retrying recipe for gets the slack alone."""
    reference = 0
    try:
        candidates = RuleSynthesizer().propose(dict(pattern), policy)
    except (GossipmindError, KeyError, TypeError, ValueError):
        candidates = []
    for cand in candidates:
        fid = fix_id(bytes(pattern.get("pattern", b"")), cand.recipe)
        idempotent = not is_non_idempotent(cand.recipe["scope"], policy)
        result = drill(cand.recipe, FaultModel.from_pattern(pattern), fid, idempotent=idempotent)
        reference = max(reference, result.added_latency_ms)
    return 2 * reference + ADDED_LATENCY_SLACK_MS


def scope_problem(recipe: Mapping[str, Any], pattern: Mapping[str, Any]) -> str | None:
    """Why ``recipe`` may not be a fix for ``pattern``'s calls, or None.

    A fix is looked up by pattern and applied to that pattern's calls, while
    its risk, the goals it must keep and who may verify it follow its recipe's
    scope: the two must be the same (the fold rejects any other fix too).
    """
    service, operation = pattern.get("service"), pattern.get("operation")
    if not isinstance(service, str) or not isinstance(operation, str):
        return "the pattern's service and operation are unknown"
    scope = recipe_scope(pattern)
    if recipe["scope"] != scope:
        return (
            f"recipe scope {recipe['scope']!r} is not the pattern's scope {scope!r}"
            f" (service.operation): it would be applied to {scope} calls"
        )
    return None


def _published_figures(fix: Mapping[str, Any], model: FaultModel, mine: DrillResult) -> str:
    """How the proposer's published figures compare with the verifier's drill.

    ``"reproduced"``, ``"differ"`` (same model and runs, other figures: the
    proposer's figures are wrong), ``"other model"`` (the proposer drilled
    another model, e.g. the pattern's statistics have moved since; nothing to
    compare), ``"invalid model"`` or ``"none"``.
    """
    published = fix.get("drill")
    theirs = published_model(fix)
    if not isinstance(published, Mapping) or theirs is None:
        return "none"
    if isinstance(theirs, str):
        return "invalid model"
    if theirs != model or published.get("runs") != mine.runs:
        return "other model"
    same = all(published.get(k) == v for k, v in mine.to_body().items())
    return "reproduced" if same else "differ"


def check_fix(
    fix: Mapping[str, Any],
    pattern: Mapping[str, Any],
    policy: Policy,
    *,
    max_amplification_pm: int = MAX_AMPLIFICATION_PM,
) -> Verdict:
    """Static checks and a drill of one fix row (``core.snapshot.fix_row``) for its pattern.

    The verdict is on the recipe, for the pattern: the drill runs against the
    pattern's own fault model. The proposer's published figures are compared
    and the result recorded (``published_drill`` in the evidence, and a note in
    the reasons when they are wrong), but they never decide the verdict: fixes
    merge by id, so a member who published bogus figures for a recipe first
    would otherwise get the network's fix for that pattern rejected for good.
    """
    recipe = fix["recipe"]
    reasons: list[str] = []
    try:
        check_recipe(recipe)
    except GossipmindError as exc:
        return Verdict(False, [f"recipe invalid: {exc}"])
    problem = scope_problem(recipe, pattern)
    if problem is not None:
        reasons.append(problem)
    steps = steps_by_type(recipe)
    if "idempotency_key" in steps:
        problem = key_header_problem(steps["idempotency_key"]["header"])
        if problem is not None:
            reasons.append(f"idempotency_key: {problem}")
    error_class = pattern.get("error_class")
    if "retry" in steps:
        retried = set(steps["retry"]["on"])
        if error_class in NEVER_RETRY:
            reasons.append(f"retrying cannot fix a {error_class} error")
        if retried & NEVER_RETRY:
            reasons.append(f"retries {sorted(retried & NEVER_RETRY)} errors, which never heal")
        problem = retry_problem(recipe, pattern)
        if problem is not None and error_class not in NEVER_RETRY:
            reasons.append(problem)
        ignored = ignores_retry_after(recipe, pattern)
        if ignored is not None:
            reasons.append(f"ignores Retry-After: {ignored}")
        problem = backoff_problem(recipe)
        if problem is not None:
            reasons.append(problem)
        if is_non_idempotent(recipe["scope"], policy) and "idempotency_key" not in steps:
            reasons.append(
                f"retries a non-idempotent {recipe['scope']} call without an idempotency key"
            )
    for _, why in fix.get("violations", []):
        reasons.append(f"breaks an active goal: {why}")
    if reasons:
        return Verdict(False, reasons)
    model = FaultModel.from_pattern(pattern)
    result = reproduce(fix, pattern, policy)
    figures = _published_figures(fix, model, result)
    evidence: dict[str, Any] = {"drill_" + k: v for k, v in result.to_body().items()}
    evidence["drill_model"] = model.to_body()
    evidence["published_drill"] = figures
    if not result.better_than_baseline:
        reasons.append(
            f"drill success {result.success_bp} bp is not above the baseline "
            f"{result.baseline_success_bp} bp"
        )
    if result.amplification_pm > max_amplification_pm:
        reasons.append(
            f"call amplification {result.amplification_pm / 1000:.2f}x exceeds "
            f"{max_amplification_pm / 1000:.2f}x"
        )
    limit = added_latency_limit(pattern, policy)
    evidence["added_latency_limit_ms"] = limit
    if result.added_latency_ms > limit:
        reasons.append(
            f"adds {result.added_latency_ms} ms to every call on average in its drill, more"
            f" than {limit} ms (twice what the network's own recipe for this pattern adds,"
            f" plus {ADDED_LATENCY_SLACK_MS} ms)"
        )
    outage = None if error_class in NO_OUTAGE_DRILL else reproduce_outage(fix, pattern, policy)
    if outage is not None:
        evidence["outage_amplification_pm"] = outage.amplification_pm
        evidence["outage_max_attempts"] = outage.max_attempts_seen
    if outage is not None and outage.amplification_pm > max_amplification_pm:
        reasons.append(
            f"in an outage (the service down for half of the drill) call amplification "
            f"{outage.amplification_pm / 1000:.2f}x exceeds {max_amplification_pm / 1000:.2f}x:"
            " a retry storm"
        )
    accept = not reasons
    if not reasons:
        reasons.append("drill on the pattern's fault model better than baseline")
    if figures in ("differ", "invalid model"):
        reasons.append(f"note: the proposer's published drill is wrong ({figures})")
    return Verdict(accept, reasons, evidence)


def wilson_upper_bp(successes: int, attempts: int) -> int:
    """Wilson upper bound of a success rate, in basis points (10000 without data)."""
    if attempts <= 0:
        return 10_000
    return 10_000 - wilson_lower_bound_bp(attempts - successes, attempts)


def _outcome_counts(fix: Mapping[str, Any]) -> list[tuple[int, int]]:
    """Each author's (attempts, successes), capped (``core.fold.weighted_outcomes``).

    From the row's raw per-author ``outcomes``; a row without them (a summary)
    counts as one author with its ``attempts`` and ``successes``.
    """
    raw = fix.get("outcomes")
    if not isinstance(raw, list):
        n = int(fix.get("attempts", 0))
        return [(n, int(fix.get("successes", 0)))] if n > 0 else []
    return [weighted_outcomes([(int(o[1]), int(o[2]))]) for o in raw if int(o[1]) > 0]


def _views(counts: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """The (attempts, successes) a verdict is judged on: the agents' outcomes, and
    the outcomes with each single agent's left out; from three agents on in each,
    without the highest rate's agent and the lowest's. O(agents) after one sort."""
    ranked = sorted(counts, key=lambda c: (Fraction(c[1], c[0]), c))
    k = len(ranked)
    n, s = sum(a for a, _ in ranked), sum(x for _, x in ranked)

    def without(*idx: int) -> tuple[int, int]:
        return n - sum(ranked[i][0] for i in idx), s - sum(ranked[i][1] for i in idx)

    views = {without(0, k - 1) if k >= 3 else (n, s)}
    if k < 2:
        return views
    for i in range(k):  # left out: i, then the lowest and highest of the others
        if k - 1 < 3:
            views.add(without(i))
        else:
            views.add(without(i, 1 if i == 0 else 0, k - 2 if i == k - 1 else k - 1))
    return views


def _bounds(counts: list[tuple[int, int]]) -> tuple[int, int]:
    """The Wilson bounds a verdict must clear on every one of :func:`_views`: the
    lowest lower bound and the highest upper bound."""
    views = _views(counts)
    lb = min(wilson_lower_bound_bp(x, a) for a, x in views)
    ub = max(wilson_upper_bp(x, a) for a, x in views)
    return lb, ub


def fleet_evidence(fix: Mapping[str, Any], policy: Policy) -> tuple[str, str, dict[str, Any]]:
    """("wait" | "good" | "bad", why, evidence) from a fix's outcome counters.

    Enough evidence means outcomes from at least ``evidence_min_reporters``
    distinct agents (the row's ``outcome_reporters``). The rate is the fold's:
    each agent weighs at most ``OUTCOME_CAP`` attempts. Good: the Wilson lower
    bound of the success rate reaches ``evidence_min_success_bp``. Bad: even its
    upper bound stays below it.

    One agent's counters never decide a verdict: it must hold on the fleet's
    outcomes and again with any single agent's left out (:func:`_bounds`). From
    three agents on, each of those is judged without the agent with the highest
    success rate and the one with the lowest (a member reporting every call a
    success, or every call a failure, is one of them), so one agent's outcomes
    rarely hold a verdict back; with few agents one can delay it.
    """
    counts = _outcome_counts(fix)
    n = sum(a for a, _ in counts)
    s = sum(x for _, x in counts)
    reporters = int(fix.get("outcome_reporters", len(counts)))
    lb, ub = _bounds(counts)
    evidence = {
        "fleet_successes": s,
        "fleet_attempts": n,
        "fleet_reporters": reporters,
        "fleet_lower_bp": lb,
        "fleet_upper_bp": ub,
    }
    need = policy.evidence_min_success_bp
    if reporters < policy.evidence_min_reporters:
        return (
            "wait",
            f"outcomes from {reporters} of {policy.evidence_min_reporters} agents",
            evidence,
        )
    if lb >= need:
        return (
            "good",
            f"fleet success ≥ {lb / 100:.1f}% (lower bound) from {reporters} agents",
            evidence,
        )
    if ub < need:
        return (
            "bad",
            f"fleet success ≤ {ub / 100:.1f}% (upper bound) from {reporters} agents",
            evidence,
        )
    return (
        "wait",
        f"fleet success between {lb / 100:.1f}% and {ub / 100:.1f}%: not yet decided",
        evidence,
    )


def judge(
    fix: Mapping[str, Any], pattern: Mapping[str, Any] | None, policy: Policy, tier: int
) -> Verdict | None:
    """A verifier's verdict at its tier, or None to wait: for the pattern (not
    known here yet: it comes by gossip) or for fleet evidence.

    Tier 1 judges on the static checks and the drill. Tier 2 and up also
    require fleet evidence of the fix working (outcomes from canary agents).
    """
    if pattern is None:
        return None
    verdict = check_fix(fix, pattern, policy)
    if not verdict.accept or tier < 2:
        return verdict
    state, why, evidence = fleet_evidence(fix, policy)
    verdict.evidence.update(evidence)
    if state == "wait":
        return None
    if state == "bad":
        return Verdict(False, [why], verdict.evidence)
    verdict.reasons.append(why)
    return verdict
