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


def as_keywords(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``fn(*args, **kwargs)`` as the same call with every argument that can go by
    keyword going by keyword: a recipe's steps then see (and never pass twice) an
    ``idempotency_key``, ``headers`` or ``set_param`` argument the caller passed
    by position. ``pay("jane", 4999, "order-17")`` raised ``TypeError`` (multiple
    values for 'idempotency_key') once a keyed fix applied. Unchanged when the
    signature cannot be read, the arguments do not bind (the call's own error
    will say so), or values fill a ``*args`` (keywords cannot precede them)."""
    if not args:
        return args, kwargs
    try:
        sig = inspect.signature(fn)
        bound = sig.bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return args, kwargs
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.POSITIONAL_ONLY:
            positional.append(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                return args, kwargs
        elif kind is inspect.Parameter.VAR_KEYWORD:
            keywords.update(value)
        else:
            keywords[name] = value
    return tuple(positional), keywords
