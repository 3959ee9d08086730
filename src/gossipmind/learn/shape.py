"""A context reduced to its shape: keys and value types, never a value.

``shape({"amount": 1250, "customer": {"email": "a@b.co"}, "items": [{"sku": "X"}]})``
is ``{amount:int,customer:{email:str},items:[{sku:str}]}``.

* Scalars render as ``null``, ``bool``, ``int``, ``float``, ``str``, ``bytes``;
  anything else as ``obj``.
* Maps render their entries sorted by key. A key is kept only if it is a plain
  identifier (``[A-Za-z_$@][A-Za-z0-9_.-]*``, at most 48 characters, at most
  two digits, not a random-looking id, untouched by :func:`redact`); any other
  key is a value in disguise (a user id, an email, a card number keyed map)
  and renders as ``*``. Entries that render to the same key merge.
* Sequences render the sorted union of their items' shapes: ``[int|str]``;
  only the first :data:`MAX_ITEMS` items are looked at.
* Bounded: deeper than ``max_depth``, beyond :data:`MAX_NODES` visited values,
  or beyond :data:`MAX_KEYS` keys in one map, a ``~`` marks what was cut; the
  string is cut to ``max_len`` characters (ending in ``~`` when cut).

The result depends only on the value (not on dict insertion order), so two
nodes compute the same shape for the same context.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from gossipmind.learn.redact import looks_random, redact

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "MAX_KEYS", "MAX_NODES", "MAX_SHAPE", "shape"]

MAX_SHAPE = 1024
MAX_DEPTH = 8
MAX_ITEMS = 64
MAX_KEYS = 128
MAX_NODES = 2048
CUT = "~"

_KEY_OK = re.compile(r"[A-Za-z_$@][A-Za-z0-9_.\-]{0,47}")


def _key(k: object) -> str:
    if not isinstance(k, str) or not _KEY_OK.fullmatch(k):
        return "*"
    return _plain_key(k)


@functools.lru_cache(maxsize=4096)
def _plain_key(k: str) -> str:
    # Pure, and keys are at most 48 characters: caching keeps contexts cheap.
    if sum(ch.isdigit() for ch in k) > 2 or looks_random(k) or redact(k) != k:
        return "*"
    return k


class _Walker:
    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.budget = MAX_NODES

    def walk(self, v: Any, depth: int) -> str:
        self.budget -= 1
        if self.budget < 0:
            return CUT
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, int):
            return "int"
        if isinstance(v, float):
            return "float"
        if isinstance(v, str):
            return "str"
        if isinstance(v, bytes | bytearray | memoryview):
            return "bytes"
        if isinstance(v, Mapping):
            return CUT if depth >= self.max_depth else self._map(v, depth)
        if isinstance(v, list | tuple):
            return CUT if depth >= self.max_depth else self._seq(list(v[:MAX_ITEMS]), depth)
        if isinstance(v, set | frozenset):
            if depth >= self.max_depth or len(v) > MAX_ITEMS:
                return "[~]"
            return self._seq(list(v), depth)
        return "obj"

    def _map(self, m: Mapping[Any, Any], depth: int) -> str:
        def order(k: object) -> tuple[int, str]:
            return (0, k) if isinstance(k, str) else (1, type(k).__name__)

        keys = sorted(m.keys(), key=order)
        entries: dict[str, set[str]] = {}
        for k in keys[:MAX_KEYS]:
            entries.setdefault(_key(k), set()).add(self.walk(m[k], depth + 1))
        parts = [f"{k}:{'|'.join(sorted(types))}" for k, types in sorted(entries.items())]
        if len(keys) > MAX_KEYS:
            parts.append(CUT)
        return "{" + ",".join(parts) + "}"

    def _seq(self, items: list[Any], depth: int) -> str:
        types = {self.walk(item, depth + 1) for item in items}
        return "[" + "|".join(sorted(types)) + "]"


def shape(value: Any, *, max_depth: int = MAX_DEPTH, max_len: int = MAX_SHAPE) -> str:
    """The canonical shape of a JSON-like value (keys and types only, at most ``max_len``)."""
    s = _Walker(max_depth).walk(value, 0)
    if len(s) > max_len:
        s = s[: max_len - 1] + CUT
    return s
