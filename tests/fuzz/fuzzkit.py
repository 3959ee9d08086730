"""Seeds and mutation strategies shared by the fuzz tests (and the atheris harnesses).

A fuzz input starts from a valid seed (an op of every kind, sync frames of every
type) and goes through 1-4 mutations: bit flips, byte overwrites, truncations,
insertions, deletions, duplicated slices, splices with another seed, and
*structural* mutations (decode the msgpack, replace a field or element anywhere
with a random value, repack with random packer options, so that inputs get past
the canonical-encoding check into the validation behind it). Random msgpack
documents (floats, ext types, huge ints, unsorted and non-str keys) and raw bytes
complete the corpus.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import msgpack
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from gossipmind.core import ops as opsmod
from gossipmind.core.errors import InvalidOp
from gossipmind.core.identity import Identity
from gossipmind.core.schema import pattern_id
from gossipmind.sync import messages as sm
from gossipmind.testing import KB, sample_recipe


@functools.cache
def seed_ops() -> tuple[bytes, ...]:
    """One valid op of every kind (and one of another network)."""
    kb = KB(seed=3)
    kb.grant("admin", "a", "member")
    kb.grant("admin", "v", "verifier", tier=2, scopes=("search",))
    kb.grant("admin", "t", "teacher")
    for name in ("a", "v", "t"):
        kb.sync("admin", name)
    pattern = pattern_id("search", "query", "timeout", "request timed out after <*> ms")
    kb.report("a", count=3, retry_after_ms=500)
    fix = kb.propose("a", pattern, sample_recipe("search", 3))
    kb.sync("a", "v")
    kb.write("v", "fix.attest", kb.attest_body(fix, "search"))
    kb.write("a", "fix.outcome", {"fix": fix, "attempts": 3, "successes": 2, "window": [0, 5]})
    goal = kb.write(
        "a",
        "goal.set",
        {
            "title": "bounded retries",
            "scope": "search",
            "priority": 5,
            "retired": False,
            "constraints": [{"op": "<=", "field": "retry.max_attempts", "value": 4}],
        },
    )
    kb.sync("a", "v")
    kb.write(
        "v",
        "goal.review",
        {"goal": goal.id, "version": goal.id, "verdict": "approve", "comment": "ok"},
    )
    kb.sync("v", "admin")
    kb.write("admin", "fix.revoke", {"fix": fix, "scope": "search", "reason": "test"})
    kb.revoke("admin", "t")
    other = KB(seed=4)
    other.grant("admin", "a", "member")
    return (*(op.raw for op in kb.ops), other.ops[-1].raw)


@functools.cache
def seed_frames() -> tuple[bytes, ...]:
    ops = seed_ops()
    ids = [bytes([i]) * 32 for i in range(1, 5)]
    msgs: list[sm.Message] = [
        sm.Hello(ids[0], {ids[1]: 3, ids[2]: 1}, ids[1:3], ids[3], 17, ["/ip4/127.0.0.1/tcp/1"]),
        sm.Ops(list(ops[:4])),
        sm.Sent(),
        sm.End(ids[:2]),
        sm.End([]),
        sm.Bye("done"),
    ]
    return tuple(sm.encode(m) for m in msgs)


# -- random msgpack ---------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.integers().filter(lambda i: -(2**63) <= i < 2**64)
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.binary(max_size=70)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=12))
    | st.builds(msgpack.Timestamp, st.integers(0, 2**40), st.integers(0, 999_999_999))
)
_keys = st.text(max_size=10) | st.integers(-5, 5) | st.binary(max_size=4)
values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=12)
        | st.dictionaries(_keys, inner, max_size=8)
        | st.lists(inner, min_size=10, max_size=10)  # the size of an op envelope
    ),
    max_leaves=20,
)


def pack(value: Any, use_bin_type: bool = True) -> bytes:
    return msgpack.packb(value, use_bin_type=use_bin_type)  # type: ignore[no-any-return]


random_msgpack = st.builds(pack, values, st.booleans())


# -- mutations ----------------------------------------------------------------------------


def _unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False, use_list=True)


@st.composite
def _structural(draw: st.DrawFn, raw: bytes) -> bytes:
    """Replace one node anywhere in the document with a random value, then repack."""
    try:
        doc = _unpack(raw)
    except (ValueError, TypeError, msgpack.UnpackException):
        return raw
    path: list[tuple[Any, Any]] = []
    node = doc
    for _ in range(8):
        if isinstance(node, list) and node:
            key: Any = draw(st.integers(0, len(node) - 1))
        elif isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node, key=repr)))
        else:
            break
        path.append((node, key))
        if draw(st.booleans()):
            break
        node = node[key]
    new = draw(values | st.sampled_from([0, 1, -1, 2**64 - 1, "", b"", [], {}, b"\x00" * 32]))
    if not path:
        doc = new
    else:
        parent, key = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete":
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(_keys)] = new
        elif action == "add":
            parent.insert(key, new)
        else:
            parent[key] = new
    return pack(doc, draw(st.booleans()))


@st.composite
def mutate(draw: st.DrawFn, raw: bytes, others: tuple[bytes, ...] = ()) -> bytes:
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        kind = draw(
            st.sampled_from(
                ["flip", "set", "truncate", "insert", "delete", "dup", "splice", "structural"]
            )
        )
        at = draw(st.integers(0, max(n - 1, 0)))
        if kind == "flip" and n:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and n:
            data[at] = draw(st.sampled_from([0x00, 0xC0, 0xC1, 0xC4, 0xD9, 0xDC, 0xDE, 0xFF]))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "dup" and n:
            end = min(n, at + draw(st.integers(1, 16)))
            data[at:at] = data[at:end]
        elif kind == "splice" and others:
            other = draw(st.sampled_from(others))
            cut = draw(st.integers(0, len(other)))
            data = data[:at] + other[cut:]
        elif kind == "structural":
            data = bytearray(draw(_structural(bytes(data))))
    return bytes(data)


# -- a container where a str is expected, signed again -------------------------------------

_STRANGER = Identity(bytes(range(32)))  # a key no seed network granted
# body maps whose values are any canonical values (protocol.md §4): a container is valid there
_ANY_VALUES = (("evidence",), ("drill", "model"), ("policy",))


def _str_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    names = tuple(p for p in path if isinstance(p, str))
    if any(names[: len(a)] == a for a in _ANY_VALUES):
        return []
    if isinstance(value, str):
        return [path]
    if not isinstance(value, dict | list):
        return []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return [p for k, v in items for p in _str_paths(v, (*path, k))]


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    if isinstance(value, dict):
        return {k: _replaced(v, path[1:], new) if k == path[0] else v for k, v in value.items()}
    return [_replaced(v, path[1:], new) if i == path[0] else v for i, v in enumerate(value)]


_containers = (
    st.sampled_from([[], {}, [[]], {"type": []}])
    | st.lists(st.text(max_size=8), min_size=1, max_size=3)
    | st.dictionaries(st.text(max_size=8), st.text(max_size=8), min_size=1, max_size=3)
)


def _signed_with(op: opsmod.Op, path: tuple[Any, ...], new: Any) -> bytes:
    body = _replaced(op.body, path, new)
    fields = {"seq": op.seq, "lamport": op.lamport, "deps": op.deps, "ts": op.ts}
    return opsmod.create(_STRANGER, net=op.net, kind=op.kind, body=body, **fields).raw


def containers_for_strs(seeds: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """Seed ops with an array or a map where the body holds a str (a recipe step's
    ``type``, a risk, a name, ...; every such place equally likely), signed again
    by a key nobody granted. The schema is checked before the signature, so a byte
    mutation reaches it too, but only a signed op gets past the store's parallel
    signature check to it."""
    places = []
    for raw in seeds:
        try:
            op = opsmod.decode(raw)
        except InvalidOp:
            continue
        places += [(op, path) for path in _str_paths(op.body)]
    return st.sampled_from(places).flatmap(
        lambda place: st.builds(_signed_with, st.just(place[0]), st.just(place[1]), _containers)
    )


def mutants(seeds: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    return st.sampled_from(seeds).flatmap(lambda raw: mutate(raw, seeds))


def junk(seeds: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """Mutated seeds, random msgpack and random bytes (mostly mutants)."""
    return st.one_of(
        mutants(seeds), mutants(seeds), mutants(seeds), random_msgpack, st.binary(max_size=300)
    )


SCALE = float(os.environ.get("GOSSIPMIND_FUZZ_SCALE", "1"))


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings for a fuzz test: ``examples`` times ``GOSSIPMIND_FUZZ_SCALE``."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
