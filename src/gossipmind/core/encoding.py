"""Canonical msgpack: the only byte representation of signed data.

Rules (normative, see docs/protocol.md §2):

* allowed types: nil, bool, int (-2**63 .. 2**64-1), str (UTF-8), bytes (bin),
  array, map; no floats, no ext types;
* every value is encoded in its shortest msgpack form (what msgpack-python
  produces with ``use_bin_type=True``);
* map keys are str, unique, and sorted by their UTF-8 bytes;
* a decoder re-encodes what it read and rejects the input unless the bytes are
  identical, so every value has exactly one encoding.
"""

from __future__ import annotations

from typing import Any

import msgpack

from gossipmind.core.errors import EncodingError

MAX_DEPTH = 32
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

Value = Any  # nil | bool | int | str | bytes | list[Value] | dict[str, Value]


def _check(value: Value, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EncodingError(f"nesting deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, bool | str | bytes):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise EncodingError(f"integer out of range: {value}")
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodingError(f"map key must be str, got {type(key).__name__}")
            _check(item, depth + 1)
        return
    raise EncodingError(f"type not allowed in canonical data: {type(value).__name__}")


def _sorted(value: Value) -> Value:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value, key=lambda s: s.encode("utf-8"))}
    if isinstance(value, list | tuple):
        return [_sorted(v) for v in value]
    return value


def encode(value: Value) -> bytes:
    """Encode ``value`` canonically (maps sorted, tuples as arrays)."""
    _check(value, 0)
    try:
        return msgpack.packb(_sorted(value), use_bin_type=True)  # type: ignore[no-any-return]
    except (ValueError, TypeError, OverflowError) as exc:  # pragma: no cover - _check guards
        raise EncodingError(f"cannot encode: {exc}") from exc


def _reject_float(*_args: Any) -> Any:
    raise EncodingError("floats are not allowed in canonical data")


def decode(data: bytes, *, max_size: int | None = None) -> Value:
    """Decode canonical bytes; raise :class:`EncodingError` on anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EncodingError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if max_size is not None and len(data) > max_size:
        raise EncodingError(f"{len(data)} bytes exceeds the limit of {max_size}")
    if not data:
        raise EncodingError("empty input")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_reject_ext,
        )
    except EncodingError:
        raise
    except msgpack.ExtraData as exc:
        raise EncodingError("trailing bytes after the value") from exc
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise EncodingError(f"not valid msgpack: {exc or type(exc).__name__}") from exc
    _check_no_float(value, 0)
    _check(value, 0)
    if encode(value) != data:
        raise EncodingError("non-canonical encoding (re-encoding gives different bytes)")
    return value


def _reject_ext(code: int, _data: bytes) -> Any:
    raise EncodingError(f"ext type {code} is not allowed in canonical data")


def _check_no_float(value: Value, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EncodingError(f"nesting deeper than {MAX_DEPTH}")
    if isinstance(value, float):
        raise EncodingError("floats are not allowed in canonical data")
    if isinstance(value, list):
        for item in value:
            _check_no_float(item, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            _check_no_float(item, depth + 1)
