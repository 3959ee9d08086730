"""Goal constraints over recipes, conflicts between goals, and their resolution (pure).

Semantics (docs/protocol.md §6.6, docs/goals.md):

* ``{"op": "<=" | ">=" | "=", "field": "step.param" | "budget_ms", "value": v}`` —
  holds if the step (or the budget) is absent (vacuous) or its value compares;
* ``require_step S [when W]`` — S is present (whenever W is present);
* ``forbid_step S`` — S is absent;
* ``allowed_fallbacks [targets]`` — a fallback step, if present, targets one of them.

Two active goals whose scopes overlap **conflict** when no recipe can satisfy
both on some point: numeric bounds on the same field with an empty
intersection, different ``=`` values, one requires (unconditionally) a step the
other forbids, or disjoint non-empty fallback allow-lists. A conflict is
resolved by priority: the constraints of the lower-priority goal that take part
in it are dropped *in the overlap of the two scopes* (elsewhere they still
apply). At equal priority both are dropped from the automatic checks in the
overlap, and every fix there needs a tier-3 (human) verifier.

Everything here is a function of the set of active goals: every replica
resolves the same way whatever the order the ops arrived in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gossipmind.core.policy import scope_covers
from gossipmind.core.recipe import steps_by_type


@dataclass(frozen=True)
class Goal:
    id: bytes
    scope: str
    priority: int
    constraints: tuple[Mapping[str, Any], ...]
    title: str = ""


@dataclass(frozen=True)
class Conflict:
    a: bytes  # the two goals, a < b by id
    b: bytes
    scope: str  # where they overlap (the narrower scope)
    reason: str
    winner: bytes | None  # None: equal priority, a person decides (tier 3)


@dataclass
class Resolution:
    conflicts: list[Conflict] = field(default_factory=list)
    # (goal, constraint index) -> the scopes where it is dropped: the overlaps of
    # the conflicts it lost (outside them, the constraint still applies)
    dropped: dict[tuple[bytes, int], set[str]] = field(default_factory=dict)
    tier3_scopes: list[str] = field(default_factory=list)

    def drop(self, goal: bytes, indexes: Iterable[int], where: str) -> None:
        for i in indexes:
            self.dropped.setdefault((goal, i), set()).add(where)

    def is_dropped(self, goal: bytes, index: int, scope: str) -> bool:
        """Whether constraint ``index`` of ``goal`` is dropped for a recipe of ``scope``."""
        return any(scope_covers(w, scope) for w in self.dropped.get((goal, index), ()))

    def needs_tier3(self, scope: str) -> bool:
        return any(scope_covers(s, scope) for s in self.tier3_scopes)


def overlap(a: str, b: str) -> str | None:
    if scope_covers(a, b):
        return b
    if scope_covers(b, a):
        return a
    return None


def _value(recipe: Mapping[str, Any], fieldname: str) -> Any:
    """The value ``fieldname`` names in ``recipe``, or None if absent (protocol.md
    §6.6). A step's ``type`` is not one of its parameters (§4.11: ``type`` plus
    exactly its fields), so ``retry.type`` names nothing."""
    if fieldname == "budget_ms":
        return recipe.get("budget_ms")
    step, _, param = fieldname.partition(".")
    s = steps_by_type(dict(recipe)).get(step)
    return None if s is None or param == "type" else s.get(param)


def violation(recipe: Mapping[str, Any], c: Mapping[str, Any]) -> str | None:
    """Why ``recipe`` breaks constraint ``c``, or None if it satisfies it."""
    steps = steps_by_type(dict(recipe))
    op = c["op"]
    if op in ("<=", ">=", "="):
        v = _value(recipe, c["field"])
        if v is None:
            return None
        want = c["value"]
        if type(v) is not type(want):
            return f"{c['field']} is {v!r}, not comparable with {want!r}"
        ok = (v <= want) if op == "<=" else (v >= want) if op == ">=" else (v == want)
        return None if ok else f"{c['field']} = {v} breaks {op} {want}"
    if op == "require_step":
        when = c.get("when")
        if when is not None and when not in steps:
            return None
        if c["step"] in steps:
            return None
        return f"requires a {c['step']} step" + (f" with {when}" if when else "")
    if op == "forbid_step":
        return f"forbids a {c['step']} step" if c["step"] in steps else None
    if op == "allowed_fallbacks":
        fb = steps.get("fallback")
        if fb is None or fb["target"] in c["targets"]:
            return None
        return f"fallback to {fb['target']!r} is not among {c['targets']}"
    return f"unknown constraint {op!r}"


def _interval(constraints: Iterable[Mapping[str, Any]]) -> tuple[float, float]:
    lo, hi = float("-inf"), float("inf")
    for c in constraints:
        v = c["value"]
        if isinstance(v, bool) or not isinstance(v, int):
            continue
        if c["op"] in (">=", "="):
            lo = max(lo, v)
        if c["op"] in ("<=", "="):
            hi = min(hi, v)
    return lo, hi


def _pair_conflicts(a: Goal, b: Goal) -> list[tuple[str, list[int], list[int]]]:
    """(reason, indexes in a, indexes in b) for every contradiction between a and b."""
    out: list[tuple[str, list[int], list[int]]] = []
    ca = list(enumerate(a.constraints))
    cb = list(enumerate(b.constraints))
    fields = {c["field"] for _, c in ca + cb if "field" in c}
    for f in sorted(fields):
        ia = [i for i, c in ca if c.get("field") == f]
        ib = [i for i, c in cb if c.get("field") == f]
        if not ia or not ib:
            continue
        lo, hi = _interval([a.constraints[i] for i in ia] + [b.constraints[i] for i in ib])
        eq = {
            repr(c["value"])
            for c in (*(a.constraints[i] for i in ia), *(b.constraints[i] for i in ib))
            if c["op"] == "="
        }
        if lo > hi or len(eq) > 1:
            out.append((f"{f}: no value satisfies both", ia, ib))
    for x, y, xi, yi, flip in ((a, b, ca, cb, False), (b, a, cb, ca, True)):
        for i, c in xi:
            if c["op"] != "require_step" or "when" in c:
                continue
            for j, d in yi:
                if d["op"] == "forbid_step" and d["step"] == c["step"]:
                    pair = ([j], [i]) if flip else ([i], [j])
                    out.append(
                        (
                            f"{x.title or 'one goal'} requires {c['step']}, "
                            f"{y.title or 'the other'} forbids it",
                            *pair,
                        )
                    )
    fa = [(i, set(c["targets"])) for i, c in ca if c["op"] == "allowed_fallbacks" and c["targets"]]
    fb = [(j, set(c["targets"])) for j, c in cb if c["op"] == "allowed_fallbacks" and c["targets"]]
    for i, s in fa:
        for j, t in fb:
            if not s & t:
                out.append(("no fallback target is allowed by both", [i], [j]))
    return out


def resolve(goals: Iterable[Goal]) -> Resolution:
    """Detect every conflict between active goals and resolve it (see module doc)."""
    ordered = sorted(goals, key=lambda g: g.id)
    res = Resolution()
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            where = overlap(a.scope, b.scope)
            if where is None:
                continue
            for reason, ia, ib in _pair_conflicts(a, b):
                if a.priority == b.priority:
                    winner = None
                    res.drop(a.id, ia, where)
                    res.drop(b.id, ib, where)
                    if where not in res.tier3_scopes:
                        res.tier3_scopes.append(where)
                else:
                    win, lose, lose_idx = (a, b, ib) if a.priority > b.priority else (b, a, ia)
                    winner = win.id
                    res.drop(lose.id, lose_idx, where)
                res.conflicts.append(Conflict(a.id, b.id, where, reason, winner))
    res.tier3_scopes.sort()
    return res


def violations(
    recipe: Mapping[str, Any], goals: Iterable[Goal], resolution: Resolution
) -> list[tuple[bytes, str]]:
    """(goal, why) for every effective constraint of an active goal covering the
    recipe's scope that the recipe breaks."""
    out = []
    scope = recipe["scope"]
    for g in sorted(goals, key=lambda g: g.id):
        if not scope_covers(g.scope, scope):
            continue
        for i, c in enumerate(g.constraints):
            if resolution.is_dropped(g.id, i, scope):
                continue
            why = violation(recipe, c)
            if why is not None:
                out.append((g.id, why))
    return out
