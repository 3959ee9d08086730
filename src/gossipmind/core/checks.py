"""Tiny schema combinators: every failure names the path and what was expected."""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable
from typing import Any

from gossipmind.core.errors import SchemaError

Checker = Callable[[Any, str], Any]


def fail(path: str, message: str) -> SchemaError:
    return SchemaError(path, message)


_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 80


def show(x: object) -> str:
    """``repr(x)`` shortened (a value from an op can be 64 KiB): for messages."""
    return _SHOW.repr(x)


def is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def integer(lo: int, hi: int) -> Checker:
    def check(x: Any, path: str) -> int:
        if not is_int(x):
            raise fail(path, f"expected an integer, got {type(x).__name__}")
        if not lo <= x <= hi:
            raise fail(path, f"must be between {lo} and {hi}, got {x}")
        return int(x)

    return check


def text(max_len: int, *, min_len: int = 0) -> Checker:
    def check(x: Any, path: str) -> str:
        if not isinstance(x, str):
            raise fail(path, f"expected a string, got {type(x).__name__}")
        if not min_len <= len(x) <= max_len:
            raise fail(path, f"length must be between {min_len} and {max_len}, got {len(x)}")
        return x

    return check


_NAME = re.compile(r"(?:\*|[a-z0-9][a-z0-9._*/-]*)\Z")


def name(max_len: int = 64) -> Checker:
    """A lowercase identifier: ``*`` or [a-z0-9][a-z0-9._*/-]*; scopes, services, targets."""

    def check(x: Any, path: str) -> str:
        if type(x) is not str or not 1 <= len(x) <= max_len or not _NAME.match(x):
            s: str = text(max_len, min_len=1)(x, path)
            raise fail(path, f"{s!r} is not a lowercase name (\\*|[a-z0-9][a-z0-9._*/-]*)")
        return x

    return check


def blob(size: int) -> Checker:
    def check(x: Any, path: str) -> bytes:
        if not isinstance(x, bytes):
            raise fail(path, f"expected {size} bytes, got {type(x).__name__}")
        if len(x) != size:
            raise fail(path, f"expected {size} bytes, got {len(x)}")
        return x

    return check


def boolean(x: Any, path: str) -> bool:
    if not isinstance(x, bool):
        raise fail(path, f"expected true or false, got {type(x).__name__}")
    return x


def one_of(*choices: str) -> Checker:
    def check(x: Any, path: str) -> str:
        if type(x) is not str or x not in choices:
            raise fail(path, f"must be one of {', '.join(choices)}; got {show(x)}")
        return str(x)

    return check


def sorted_unique(item: Checker, *, max_len: int, min_len: int = 0) -> Checker:
    def check(x: Any, path: str) -> list[Any]:
        if not isinstance(x, list):
            raise fail(path, f"expected an array, got {type(x).__name__}")
        if not min_len <= len(x) <= max_len:
            raise fail(path, f"must have between {min_len} and {max_len} items, got {len(x)}")
        out = [item(v, f"{path}[{i}]") for i, v in enumerate(x)]
        if any(out[i] >= out[i + 1] for i in range(len(out) - 1)):
            raise fail(path, "items must be sorted and unique")
        return out

    return check


def array(item: Checker, *, max_len: int, min_len: int = 0) -> Checker:
    def check(x: Any, path: str) -> list[Any]:
        if not isinstance(x, list):
            raise fail(path, f"expected an array, got {type(x).__name__}")
        if not min_len <= len(x) <= max_len:
            raise fail(path, f"must have between {min_len} and {max_len} items, got {len(x)}")
        return [item(v, f"{path}[{i}]") for i, v in enumerate(x)]

    return check


def scalar(x: Any, path: str) -> int | str | bool:
    if isinstance(x, bool | str) or is_int(x):
        if isinstance(x, str) and len(x) > 256:
            raise fail(path, "string values are limited to 256 characters")
        return x  # type: ignore[no-any-return]
    raise fail(path, f"expected an integer, string or boolean, got {type(x).__name__}")


def any_map(max_keys: int) -> Checker:
    def check(x: Any, path: str) -> dict[str, Any]:
        if not isinstance(x, dict):
            raise fail(path, f"expected a map, got {type(x).__name__}")
        if len(x) > max_keys:
            raise fail(path, f"at most {max_keys} keys, got {len(x)}")
        return x

    return check


def record(
    value: Any,
    path: str,
    required: dict[str, Checker],
    optional: dict[str, Checker] | None = None,
) -> dict[str, Any]:
    """Check a map with exactly the given keys (optional ones may be absent)."""
    optional = optional or {}
    if not isinstance(value, dict):
        raise fail(path, f"expected a map, got {type(value).__name__}")
    for key in required:
        if key not in value:
            raise fail(_join(path, key), "is required")
    if len(value) > len(required):
        unknown = sorted(set(value) - set(required) - set(optional))
        if unknown:
            raise fail(_join(path, unknown[0]), "unknown field")
    prefix = f"{path}." if path else ""
    out: dict[str, Any] = {}
    for key, check in required.items():
        out[key] = check(value[key], prefix + key)
    for key, check in optional.items():
        if key in value:
            out[key] = check(value[key], prefix + key)
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
