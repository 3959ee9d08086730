"""The op envelope: encoding, signing, ids, structural decoding.

``Op = [v, net, kind, author, seq, lamport, deps, ts, body, sig]`` (docs/protocol.md §3).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from gossipmind.core import encoding
from gossipmind.core.errors import EncodingError, InvalidOp
from gossipmind.core.identity import Identity, verify

VERSION = 1
MAX_OP_SIZE = 64 * 1024
MAX_DEPS = 64
ID_SIZE = 32
GENESIS_NET = b"\x00" * 32
SIGNATURE_DOMAIN = b"gossipmind/op/1\x00"

KINDS = (
    "net.genesis",
    "member.grant",
    "member.revoke",
    "pattern.report",
    "fix.propose",
    "fix.attest",
    "fix.outcome",
    "fix.revoke",
    "goal.set",
    "goal.review",
)


def op_id(raw: bytes) -> bytes:
    """BLAKE2b-256 of the full encoded op."""
    return hashlib.blake2b(raw, digest_size=ID_SIZE).digest()


def digest(domain: bytes, data: bytes) -> bytes:
    """Domain-separated BLAKE2b-256 (used for fix ids, the state root, goal ids)."""
    return hashlib.blake2b(domain + data, digest_size=ID_SIZE).digest()


@dataclass(frozen=True, slots=True)
class Op:
    net: bytes
    kind: str
    author: bytes
    seq: int
    lamport: int
    deps: tuple[bytes, ...]
    ts: int
    body: dict[str, Any]
    sig: bytes
    raw: bytes
    id: bytes

    @property
    def is_genesis(self) -> bool:
        return self.kind == "net.genesis"

    def signing_bytes(self) -> bytes:
        return SIGNATURE_DOMAIN + encoding.encode(_envelope(self))

    def verify_signature(self) -> bool:
        return verify(self.author, self.signing_bytes(), self.sig)

    def short(self) -> str:
        return self.id.hex()[:12]


def _envelope(op: Op) -> list[Any]:
    return [
        VERSION,
        op.net,
        op.kind,
        op.author,
        op.seq,
        op.lamport,
        list(op.deps),
        op.ts,
        op.body,
    ]


def create(
    identity: Identity,
    *,
    net: bytes,
    kind: str,
    seq: int,
    lamport: int,
    deps: list[bytes] | tuple[bytes, ...],
    ts: int,
    body: dict[str, Any],
) -> Op:
    """Sign a new op. The caller (a Replica) chooses seq, lamport and deps."""
    sorted_deps = sorted(set(deps))
    envelope = [VERSION, net, kind, identity.public, seq, lamport, sorted_deps, ts, body]
    sig = identity.sign(SIGNATURE_DOMAIN + encoding.encode(envelope))
    raw = encoding.encode([*envelope, sig])
    if len(raw) > MAX_OP_SIZE:
        raise InvalidOp("oversized", f"op is {len(raw)} bytes; the limit is {MAX_OP_SIZE}")
    return decode(raw)


def _need(cond: bool, code: str, detail: str) -> None:
    if not cond:
        raise InvalidOp(code, detail)


def decode(raw: bytes) -> Op:
    """Structural decode: canonical bytes, envelope shape and field ranges.

    Does not verify the signature (see :meth:`Op.verify_signature`) nor the body
    schema (see :mod:`gossipmind.core.schema`).
    """
    raw = bytes(raw)
    _need(len(raw) <= MAX_OP_SIZE, "oversized", f"{len(raw)} bytes; the limit is {MAX_OP_SIZE}")
    try:
        doc = encoding.decode(raw)
    except EncodingError as exc:
        raise InvalidOp("encoding", str(exc)) from exc
    _need(isinstance(doc, list) and len(doc) == 10, "envelope", "an op is an array of 10 fields")
    v, net, kind, author, seq, lamport, deps, ts, body, sig = doc
    _need(v == VERSION, "version", f"unsupported op version {v!r}")
    _need(isinstance(net, bytes) and len(net) == ID_SIZE, "envelope", "net must be 32 bytes")
    _need(isinstance(kind, str), "envelope", "kind must be a string")
    _need(kind in KINDS, "unknown_kind", f"unknown kind {kind!r}")
    _need(isinstance(author, bytes) and len(author) == 32, "envelope", "author must be 32 bytes")
    _need(_is_int(seq) and seq >= 1, "envelope", "seq must be an integer >= 1")
    _need(_is_int(lamport) and lamport >= 1, "envelope", "lamport must be an integer >= 1")
    _need(isinstance(deps, list), "envelope", "deps must be an array")
    _need(len(deps) <= MAX_DEPS, "envelope", f"more than {MAX_DEPS} deps")
    _need(
        all(isinstance(d, bytes) and len(d) == ID_SIZE for d in deps),
        "envelope",
        "every dep must be a 32-byte op id",
    )
    _need(
        all(deps[i] < deps[i + 1] for i in range(len(deps) - 1)),
        "envelope",
        "deps must be sorted and unique",
    )
    _need(_is_int(ts) and ts >= 0, "envelope", "ts must be a non-negative integer")
    _need(isinstance(body, dict), "envelope", "body must be a map")
    _need(isinstance(sig, bytes) and len(sig) == 64, "envelope", "sig must be 64 bytes")
    return Op(
        net=net,
        kind=kind,
        author=author,
        seq=seq,
        lamport=lamport,
        deps=tuple(deps),
        ts=ts,
        body=body,
        sig=sig,
        raw=raw,
        id=op_id(raw),
    )


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
