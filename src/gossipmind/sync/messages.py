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
MAX_REASON_LEN = 200  # characters of a bye reason (ours are a few words)
# msgpack objects in one frame: the largest honest frame is a hello with
# MAX_AUTHORS [author, seq] pairs (3 objects each) and MAX_IDS heads. A frame of
# more is refused from its headers, before anything is decoded: 1 MiB of
# one-byte objects would otherwise cost ~0.4 s of decoding and checking.
MAX_OBJECTS = 3 * MAX_AUTHORS + MAX_IDS + MAX_PEERS + 64


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
        doc = {"t": "bye", "reason": msg.reason[:MAX_REASON_LEN]}
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


# msgpack header byte -> (bytes of a length field, or of fixed data; container kind)
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_FIXED.update({0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17})
_SIZED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin and str: length bytes
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}  # length bytes, then a type byte
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # (len bytes, per item)


def too_many_objects(data: bytes, limit: int = MAX_OBJECTS) -> bool:
    """Whether ``data`` holds more than ``limit`` msgpack objects, read from its
    headers alone (strings and bins are skipped, nothing is decoded). Stops at
    ``limit`` objects, so it costs at most that many steps; malformed input
    gives False (the decoder then names what is wrong)."""
    pos, n, pending = 0, len(data), 1  # objects still to read
    seen = 0
    while pending and pos < n:
        pending -= 1
        seen += 1
        if seen > limit:
            return True
        tag = data[pos]
        pos += 1
        if tag <= 0x7F or tag >= 0xE0:  # fixint
            continue
        if tag <= 0x8F:  # fixmap
            pending += 2 * (tag & 0x0F)
        elif tag <= 0x9F:  # fixarray
            pending += tag & 0x0F
        elif tag <= 0xBF:  # fixstr
            pos += tag & 0x1F
        elif tag in _FIXED:
            pos += _FIXED[tag]
        elif tag in _SIZED:
            w = _SIZED[tag]
            pos += w + int.from_bytes(data[pos : pos + w], "big")
        elif tag in _EXT:
            w = _EXT[tag]
            pos += w + 1 + int.from_bytes(data[pos : pos + w], "big")
        elif tag in _CONTAINERS:
            w, per = _CONTAINERS[tag]
            pending += per * int.from_bytes(data[pos : pos + w], "big")
            pos += w
        else:  # 0xC1: never used
            return False
    return False


def decode(frame: bytes) -> Message:
    """Strictly decode one frame; raise SyncError naming what is wrong."""
    if too_many_objects(frame):
        raise SyncError(f"a sync frame holds at most {MAX_OBJECTS} msgpack objects")
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
        if not isinstance(doc["reason"], str) or len(doc["reason"]) > MAX_REASON_LEN:
            raise SyncError(f"bye reason must be a string of at most {MAX_REASON_LEN} characters")
        return Bye(doc["reason"])
    raise SyncError(f"unknown sync message type {t!r}")
