"""The op envelope: encoding, signing, ids, structural decoding.

``Op = [v, net, kind, author, seq, lamport, deps, ts, body, sig]`` (docs/protocol.md §3).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from gossipmind.core import encoding
from gossipmind.core.checks import show
from gossipmind.core.errors import EncodingError, InvalidOp
from gossipmind.core.identity import Identity, verify

VERSION = 1
MAX_OP_SIZE = 64 * 1024
MAX_DEPS = 64
MAX_INT = 2**63 - 1  # seq and lamport: what SQLite's INTEGER holds
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z in ms: every datetime can show it
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


_KINDS = frozenset(KINDS)


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
        """The signed message: the domain and the encoded envelope without ``sig``.

        ``raw`` is canonical and ends with ``sig`` as bin8 (0xc4 0x40 + 64 bytes), and
        both arrays have fixarray headers, so the envelope is a slice of ``raw``.
        """
        return SIGNATURE_DOMAIN + b"\x99" + self.raw[1:-66]

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


def decode_checked_before(raw: bytes) -> Op:
    """The op :func:`decode` returned for ``raw`` earlier in this process, rebuilt
    without the canonical and envelope checks (e.g. an op parked encoded in the
    pending buffer to save memory). Never for bytes from outside the process."""
    return _op(encoding.decode_checked_before(raw), raw)


def _op(doc: list[Any], raw: bytes) -> Op:
    """The Op of an envelope array ``doc`` decoded from ``raw``."""
    _v, net, kind, author, seq, lamport, deps, ts, body, sig = doc
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
    signed = encoding.encode(envelope)  # a fixarray of 9: 0x99, then the fields
    sig = identity.sign(SIGNATURE_DOMAIN + signed)
    # the op is the same array with sig appended: fixarray of 10, then sig as bin8
    # (the layout signing_bytes relies on); encoding the body twice cost a third
    raw = b"\x9a" + signed[1:] + b"\xc4\x40" + sig
    if len(raw) > MAX_OP_SIZE:
        raise InvalidOp("oversized", f"op is {len(raw)} bytes; the limit is {MAX_OP_SIZE}")
    # canonical by construction (we just encoded it): the envelope checks still run,
    # so a caller's bad seq, ts or deps fails here as it would at every peer
    return _checked(encoding.decode_checked_before(raw), raw)


def decode(raw: bytes) -> Op:
    """Structural decode: canonical bytes, envelope shape and field ranges.

    Does not verify the signature (see :meth:`Op.verify_signature`) nor the body
    schema (see :mod:`gossipmind.core.schema`).
    """
    raw = bytes(raw)
    if len(raw) > MAX_OP_SIZE:
        raise InvalidOp("oversized", f"{len(raw)} bytes; the limit is {MAX_OP_SIZE}")
    try:
        doc = encoding.decode(raw)
    except EncodingError as exc:
        raise InvalidOp("encoding", str(exc)) from exc
    return _checked(doc, raw)


def _checked(doc: Any, raw: bytes) -> Op:
    """The Op of a decoded envelope, after the envelope's shape and range checks."""
    if type(doc) is not list or len(doc) != 10:
        raise InvalidOp("envelope", "an op is an array of 10 fields")
    v, net, kind, author, seq, lamport, deps, ts, body, sig = doc
    if v != VERSION or type(v) is not int:
        raise InvalidOp("version", f"unsupported op version {show(v)}")
    if type(net) is not bytes or len(net) != ID_SIZE:
        raise InvalidOp("envelope", "net must be 32 bytes")
    if type(kind) is not str:
        raise InvalidOp("envelope", "kind must be a string")
    if kind not in _KINDS:
        raise InvalidOp("unknown_kind", f"unknown kind {show(kind)}")
    if type(author) is not bytes or len(author) != 32:
        raise InvalidOp("envelope", "author must be 32 bytes")
    if type(seq) is not int or not 1 <= seq <= MAX_INT:
        raise InvalidOp("envelope", f"seq must be an integer in 1..{MAX_INT}")
    if type(lamport) is not int or not 1 <= lamport <= MAX_INT:
        raise InvalidOp("envelope", f"lamport must be an integer in 1..{MAX_INT}")
    if type(deps) is not list:
        raise InvalidOp("envelope", "deps must be an array")
    if len(deps) > MAX_DEPS:
        raise InvalidOp("envelope", f"more than {MAX_DEPS} deps")
    prev = b""
    for d in deps:
        if type(d) is not bytes or len(d) != ID_SIZE:
            raise InvalidOp("envelope", "every dep must be a 32-byte op id")
        if d <= prev:
            raise InvalidOp("envelope", "deps must be sorted and unique")
        prev = d
    if type(ts) is not int or not 0 <= ts <= MAX_TS:
        raise InvalidOp("envelope", f"ts must be an integer in 0..{MAX_TS} (ms, up to 9999-12-31)")
    if type(body) is not dict:
        raise InvalidOp("envelope", "body must be a map")
    if type(sig) is not bytes or len(sig) != 64:
        raise InvalidOp("envelope", "sig must be 64 bytes")
    return _op(doc, raw)
