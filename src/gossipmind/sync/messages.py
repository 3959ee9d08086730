"""Sync protocol messages (``/gossipmind/sync/1.0.0``), see docs/sync.md.

Every frame is one canonical msgpack map with a type tag ``t``. Decoding is
strict and bounded: anything malformed raises :class:`SyncError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gossipmind.core import encoding
from gossipmind.core.errors import EncodingError, SyncError

PROTOCOL = "/gossipmind/sync/1.0.0"
VERSION = 1
MAX_FRAME = 1024 * 1024
MAX_OPS_FRAME = 512 * 1024  # op bytes per `ops` frame
# The smallest op: a 10-array with a 32-byte net and author, a kind, empty deps and
# body, and a 64-byte signature encodes to over 140 bytes. Shorter entries are junk,
# refused with the frame (so a 1 MiB frame holds at most 8 192 entries to check).
MIN_OP_BYTES = 128
MAX_AUTHORS = 20_000
MAX_IDS = 1024
MAX_PEERS = 16
MAX_ADDR_LEN = 256  # characters of one shared multiaddr


@dataclass
class Hello:
    net: bytes
    vv: dict[bytes, int]  # author -> highest seq held (contiguous by construction)
    heads: list[bytes]
    root: bytes
    count: int
    peers: list[str] = field(default_factory=list)


@dataclass
class Ops:
    ops: list[bytes]


@dataclass
class Sent:
    """The sender has sent every op the receiver lacked by version vector."""


@dataclass
class End:
    want: list[bytes]  # ids the sender still lacks (forks, gaps); empty: satisfied


@dataclass
class Bye:
    reason: str = ""


Message = Hello | Ops | Sent | End | Bye


def encode(msg: Message) -> bytes:
    if isinstance(msg, Hello):
        doc: dict[str, Any] = {
            "t": "hello",
            "v": VERSION,
            "net": msg.net,
            "vv": [[a, s] for a, s in sorted(msg.vv.items())],
            "heads": sorted(msg.heads)[:MAX_IDS],
            "root": msg.root,
            "count": msg.count,
            # an address a receiver would refuse would make it refuse the whole hello
            "peers": [p for p in msg.peers if len(p) <= MAX_ADDR_LEN][:MAX_PEERS],
        }
    elif isinstance(msg, Ops):
        doc = {"t": "ops", "ops": msg.ops}
    elif isinstance(msg, Sent):
        doc = {"t": "sent"}
    elif isinstance(msg, End):
        doc = {"t": "end", "want": sorted(msg.want)[:MAX_IDS]}
    else:
        doc = {"t": "bye", "reason": msg.reason[:200]}
    return encoding.encode(doc)


def _ids(x: Any, what: str) -> list[bytes]:
    if not isinstance(x, list) or len(x) > MAX_IDS:
        raise SyncError(f"{what} must be a list of at most {MAX_IDS} ids")
    if not all(isinstance(i, bytes) and len(i) == 32 for i in x):
        raise SyncError(f"{what} must hold 32-byte ids")
    return x


def _fields(doc: dict[str, Any], *names: str) -> None:
    if set(doc) != {"t", *names}:
        raise SyncError(
            f"{doc.get('t')} message must have exactly the fields t, {', '.join(names)}"
        )


def decode(frame: bytes) -> Message:
    """Strictly decode one frame; raise SyncError naming what is wrong."""
    try:
        doc = encoding.decode(frame, max_size=MAX_FRAME)
    except EncodingError as exc:
        raise SyncError(f"undecodable sync frame: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("t"), str):
        raise SyncError("a sync frame is a map with a type tag 't'")
    t = doc["t"]
    if t == "hello":
        _fields(doc, "v", "net", "vv", "heads", "root", "count", "peers")
        if type(doc["v"]) is not int or doc["v"] != VERSION:
            raise SyncError(f"unsupported sync version {doc['v']!r}")
        vv = doc["vv"]
        if not isinstance(vv, list) or len(vv) > MAX_AUTHORS:
            raise SyncError(f"vv must be a list of at most {MAX_AUTHORS} [author, seq] pairs")
        out: dict[bytes, int] = {}
        for pair in vv:
            ok = isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], bytes)
            if not ok or len(pair[0]) != 32 or type(pair[1]) is not int or pair[1] < 1:
                raise SyncError("vv entries are [32-byte author, seq >= 1]")
            out[pair[0]] = pair[1]
        peers = doc["peers"]
        if not isinstance(peers, list) or len(peers) > MAX_PEERS:
            raise SyncError(f"peers must be a list of at most {MAX_PEERS} addresses")
        if not all(isinstance(p, str) and len(p) <= MAX_ADDR_LEN for p in peers):
            raise SyncError(f"peers must be multiaddr strings of at most {MAX_ADDR_LEN} characters")
        net, root, count = doc["net"], doc["root"], doc["count"]
        if not (
            isinstance(net, bytes)
            and len(net) == 32
            and isinstance(root, bytes)
            and len(root) == 32
        ):
            raise SyncError("hello net and root must be 32-byte ids")
        if type(count) is not int or count < 0:
            raise SyncError("hello count must be a non-negative integer")
        return Hello(net, out, _ids(doc["heads"], "heads"), root, count, peers)
    if t == "ops":
        _fields(doc, "ops")
        ops = doc["ops"]
        if not isinstance(ops, list) or not all(isinstance(o, bytes) for o in ops):
            raise SyncError("ops must be a list of op byte strings")
        if any(len(o) < MIN_OP_BYTES for o in ops):  # nothing shorter is an op: junk
            raise SyncError(f"an op is at least {MIN_OP_BYTES} bytes")
        return Ops(ops)
    if t == "sent":
        _fields(doc)
        return Sent()
    if t == "end":
        _fields(doc, "want")
        return End(_ids(doc["want"], "want"))
    if t == "bye":
        _fields(doc, "reason")
        if not isinstance(doc["reason"], str):
            raise SyncError("bye reason must be a string")
        return Bye(doc["reason"])
    raise SyncError(f"unknown sync message type {t!r}")
