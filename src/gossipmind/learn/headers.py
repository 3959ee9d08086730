"""How a recipe's arguments reach the call: keyword parameters and ``headers=``.

HTTP header names are case-insensitive, so a key the caller already put in
``headers`` under any spelling of the recipe's header is the caller's own key:
it is kept as it is (name and value) and used as the call's key, and no second
spelling is ever added.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any


def param_kind(fn: Callable[..., Any], name: str) -> str:
    """``"named"`` if ``fn`` declares keyword ``name``, ``"varkw"`` if it takes ``**kw``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "unknown"
    p = params.get(name)
    if p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
        return "named"
    if any(q.kind is q.VAR_KEYWORD for q in params.values()):
        return "varkw"
    return "none"


def find_header(headers: Mapping[Any, Any], name: str) -> tuple[Any, Any] | None:
    """The first ``(name, value)`` in ``headers`` whose name is ``name``, ignoring case."""
    wanted = name.lower()
    for k, v in headers.items():
        if isinstance(k, str | bytes) and _text(k).lower() == wanted:
            return k, v
    return None


def with_key(
    headers: Mapping[Any, Any], name: str, make_key: Callable[[], str]
) -> tuple[dict[Any, Any], str]:
    """A copy of ``headers`` carrying an idempotency key under ``name``, and that key.

    A non-empty value the caller set under any spelling of ``name`` wins; an empty one
    is filled with ``make_key()`` under the caller's spelling.
    """
    out = dict(headers)
    found = find_header(out, name)
    if found is None:
        key = make_key()
        out[name] = key
        return out, key
    spelling, value = found
    if isinstance(value, str | bytes) and value:
        return out, _text(value)
    key = make_key()
    out[spelling] = key
    return out, key


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value
