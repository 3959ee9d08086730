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


def _canon(value: Value, depth: int) -> Value:
    """Check ``value`` is encodable and return it with every map sorted (one pass).

    Map keys sort as str: code-point order is UTF-8 byte order (a key UTF-8 cannot
    encode fails in msgpack, which :func:`encode` reports). Plain scalars are
    copied inline, not through a call: most values of an op are scalars.
    """
    t = type(value)
    if t is str or t is bytes or value is None or t is bool:
        return value
    if t is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise EncodingError(f"integer out of range: {value}")
        return value
    if depth >= MAX_DEPTH:
        raise EncodingError(f"nesting deeper than {MAX_DEPTH}")
    if t is dict:
        out = {}
        for key in sorted(value) if all(type(k) is str for k in value) else _bad_keys(value):
            v = value[key]
            tv = type(v)
            if (
                tv is str
                or tv is bytes
                or v is None
                or tv is bool
                or (tv is int and _INT_MIN <= v <= _INT_MAX)
            ):
                out[key] = v
            else:
                out[key] = _canon(v, depth + 1)
        return out
    if t is list or t is tuple:
        return [_canon(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, int) and not isinstance(value, bool):  # int subclasses (IntEnum)
        return _canon(int(value), depth)
    if isinstance(value, str):
        return str(value)
    raise EncodingError(f"type not allowed in canonical data: {type(value).__name__}")


def _bad_keys(value: dict[Any, Any]) -> list[str]:
    key = next(k for k in value if type(k) is not str)
    raise EncodingError(f"map key must be str, got {type(key).__name__}")


def _check_decoded(value: Value, depth: int) -> None:
    """Check a freshly decoded value: no floats, bounded depth, sorted unique keys
    (decoded keys are valid UTF-8, so str order is their byte order)."""
    t = type(value)
    if t is float:
        raise EncodingError("floats are not allowed in canonical data")
    if t is msgpack.Timestamp:  # ext type -1: msgpack decodes it without calling ext_hook
        raise EncodingError("ext type -1 (timestamp) is not allowed in canonical data")
    if t is list:
        if depth >= MAX_DEPTH:
            raise EncodingError(f"nesting deeper than {MAX_DEPTH}")
        for item in value:
            if type(item) in _CONTAINERS_OR_FLOAT:
                _check_decoded(item, depth + 1)
    elif t is dict:
        if depth >= MAX_DEPTH:
            raise EncodingError(f"nesting deeper than {MAX_DEPTH}")
        prev = None
        for key, item in value.items():
            if type(key) is not str:  # msgpack's strict_map_key still lets bin keys through
                raise EncodingError(f"map key must be str, got {type(key).__name__}")
            if prev is not None and key <= prev:
                raise EncodingError("non-canonical encoding (map keys not sorted)")
            prev = key
            if type(item) in _CONTAINERS_OR_FLOAT:
                _check_decoded(item, depth + 1)


_CONTAINERS_OR_FLOAT = (list, dict, float, msgpack.Timestamp)


def encode(value: Value) -> bytes:
    """Encode ``value`` canonically (maps sorted, tuples as arrays)."""
    canon = _canon(value, 0)
    try:
        return msgpack.packb(canon, use_bin_type=True)  # type: ignore[no-any-return]
    except (ValueError, TypeError, OverflowError) as exc:  # pragma: no cover - _check guards
        raise EncodingError(f"cannot encode: {exc}") from exc


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
    _check_decoded(value, 0)
    if msgpack.packb(value, use_bin_type=True) != data:
        raise EncodingError("non-canonical encoding (re-encoding gives different bytes)")
    return value


def decode_checked_before(data: bytes) -> Value:
    """Decode bytes that :func:`decode` accepted earlier in this process, without
    checking them again (a third of the cost). Never for bytes from outside: those
    go through :func:`decode`."""
    return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)


def _reject_ext(code: int, _data: bytes) -> Any:
    raise EncodingError(f"ext type {code} is not allowed in canonical data")
