"""Ranking fixes by outcome evidence (DESIGN §6 step 7).

The score of a fix is the Wilson score lower bound of its outcome success
rate (successes / attempts, as the fold weighs them: each author at most
``core.fold.OUTCOME_CAP`` attempts), in basis points, computed with integers
only (``math.isqrt``, square root rounded up so the bound never overstates), so
every node ranks the same fixes the same way. Ties break by the verifiers' own
drill success (:func:`drill_bp`; never the proposer's published figure), then
by fix id bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

Z_95 = 196  # z for a two-sided 95 % interval, in hundredths


def wilson_lower_bound_bp(successes: int, attempts: int, z_centi: int = Z_95) -> int:
    """Wilson lower bound of ``successes/attempts`` in basis points (0 without attempts).

    ``LB = (2sn + z²n - z·sqrt(z²n² + 4sn(n-s))) / (2n(n + z²))``, evaluated
    with z = ``z_centi``/100 in exact integer arithmetic, rounded down.
    """
    n, s = attempts, successes
    if n <= 0:
        return 0
    if not 0 <= s <= n:
        raise ValueError(f"successes must be within 0..attempts, got {s}/{n}")
    zz = z_centi * z_centi  # z² scaled by 10^4
    x = (zz * n * n + 40_000 * s * n * (n - s)) * 10**8  # sqrt(x) = 10^4 * sqrt(X)
    root = math.isqrt(x)
    if root * root < x:
        root += 1
    num = (20_000 * s * n + zz * n) * 10_000 - z_centi * root
    den = 2 * n * (10_000 * n + zz) * 10_000
    return max(0, num * 10_000 // den)


def wilson_lower_bound(successes: int, attempts: int, z: float = 1.96) -> float:
    """The same bound as a float in [0, 1] (for display)."""
    if attempts <= 0:
        return 0.0
    p = successes / attempts
    z2 = z * z
    centre = p + z2 / (2 * attempts)
    margin = z * math.sqrt(p * (1 - p) / attempts + z2 / (4 * attempts * attempts))
    return max(0.0, (centre - margin) / (1 + z2 / attempts))


def score_bp(fix: Mapping[str, Any]) -> int:
    """A fix row's outcome score: Wilson lower bound of its successes, in basis points."""
    return wilson_lower_bound_bp(int(fix.get("successes", 0)), int(fix.get("attempts", 0)))


def _bp(x: Any) -> int | None:
    return x if type(x) is int and 0 <= x <= 10_000 else None


def drill_bp(fix: Mapping[str, Any]) -> int:
    """The verifiers' own drill success for a fix, in basis points (0 if none).

    The lowest ``drill_success_bp`` in the evidence of the row's accepting
    attestations that count (tier ≥ 1): what the verifiers measured when they
    reproduced the drill, never the figure the proposer published (which
    nobody checks before it would rank). A row without ``attestations`` (a fix
    summary, as the API serves it) carries this figure as ``drill_bp``.
    """
    attestations = fix.get("attestations")
    if not isinstance(attestations, list):
        return _bp(fix.get("drill_bp")) or 0
    figures = []
    for a in attestations:
        if not isinstance(a, Mapping) or a.get("verdict") != "accept":
            continue
        tier, evidence = a.get("tier"), a.get("evidence")
        if type(tier) is int and tier >= 1 and isinstance(evidence, Mapping):
            bp = _bp(evidence.get("drill_success_bp"))
            if bp is not None:
                figures.append(bp)
    return min(figures, default=0)


def rank(fixes: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Fix rows (``core.snapshot.fix_row``) or summaries best first: outcome score,
    the verifiers' drill success (:func:`drill_bp`), fix id."""

    def key(f: Mapping[str, Any]) -> tuple[int, int, bytes]:
        fid = f.get("fix", b"")
        return (-score_bp(f), -drill_bp(f), fid if isinstance(fid, bytes) else str(fid).encode())

    return sorted(fixes, key=key)
