"""The benchmark result contract shared by every `gossipmind bench` subcommand.

Every benchmark prints (with ``--json``) one object with at least: ``name``,
``value``, ``unit``, ``baseline`` (the limit or comparison measured in the same
run), ``ratio`` (value / baseline), ``target`` (a string such as ``">= 0.7"``)
and ``passed``.
"""

from __future__ import annotations

import operator
import os
import platform
from typing import Any

_OPS = {">=": operator.ge, "<=": operator.le}


def result(
    name: str,
    value: float,
    unit: str,
    baseline: float,
    target: str,
    *,
    ratio: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build the contract object; ``target`` is ``">= x"`` or ``"<= x"`` over the ratio."""
    if ratio is None:
        ratio = value / baseline if baseline else 0.0
    op, _, limit = target.partition(" ")
    passed = bool(_OPS[op](ratio, float(limit)))
    return {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": round(baseline, 4),
        "ratio": round(ratio, 4),
        "target": f"ratio {target}",
        "passed": passed,
        **extra,
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
