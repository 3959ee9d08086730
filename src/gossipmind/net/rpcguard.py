"""Inbound pubsub RPCs trimmed to what an honest peer of our network sends.

py-libp2p 0.8.1 hands every RPC a peer sends on its meshsub stream to
``Pubsub.continuously_read_stream`` and ``GossipSub.handle_rpc``, which trust
it far more than they should (each found by an attack on 127.0.0.1):

* a topic id that is not valid UTF-8 reaches the handlers as ``bytes``
  (protobuf's upb runtime, proto2); a GRAFT for such a topic is answered with a
  PRUNE whose ``topicID = topic`` raises ``UnicodeDecodeError`` in the read
  loop, and the host died: one 9-byte RPC stopped any node;
* every published message of an RPC is spawned as a task, and the service
  manager scans all its live tasks at each spawn: 3 000 unsigned messages in
  one 285 KB RPC cost ~2 s of event loop (quadratic; ten such RPCs held the
  node's gossip for ~20 s);
* an IWANT answers each listed id, repeats included: 2 000 copies of the id of
  one cached 100 KB message in a 96 KB RPC built a 200 MB reply (+340 MiB RSS);
  and an id is read as hex when it is ASCII hex (any case, spaces between
  bytes), so 2 000 distinct spellings of that id did the same (191 MiB reply,
  max RSS 91 -> 987 MiB);
* GRAFT/PRUNE/IHAVE for any topic create state per topic: PRUNE backoffs are
  never forgotten (60 000 topics from 20 RPCs stayed after the peer left), the
  peer scorer adds four counters per (peer, topic) and decays them all at
  every heartbeat (240 000 from 20 GRAFT RPCs, ~0.9 s stalls); a message may
  list any number of topics besides ours (160 000 counters from one message);
* a PRUNE's peer exchange (PX) makes us dial whatever addresses the sender
  signed records for, and stores those records: our connection policy (and
  peer exchange) belongs to the node, not to any peer that prunes us;
* the message id is sender + seqno, and the seqno can be of any size: 40
  messages with 200 KB seqnos held 7.6 MB in the seen cache (120 s) and as
  much in the validation cache (300 s);
* an RPC's ``senderRecord`` (a signed peer record) is verified by the read
  loop, and again by the router when the RPC carries control: an Ed25519
  verify or two per RPC (~2 % of a loaded node's event loop), for a certified
  address book that nothing of ours reads (addresses are the node's business:
  peer exchange over sync).

So each inbound RPC is parsed and trimmed before py-libp2p sees it (see
:func:`trim_rpc`): messages only for our topics, with an 8-byte seqno and a
peer-id-sized ``from``, at most :data:`MAX_MESSAGES_PER_RPC`; control only for
our topics, each GRAFT/PRUNE once, PRUNE without PX; IWANT/IHAVE ids read as
py-libp2p reads them, deduplicated and capped; no sender record. Whatever it drops an honest
py-libp2p peer of our network does not send (or is gossip that anti-entropy sync
repairs).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.utils import safe_bytes_from_hex
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

MAX_MESSAGES_PER_RPC = 128
MAX_IDS_PER_RPC = 5000  # IHAVE / IWANT message ids (go-libp2p's GossipSubMaxIHaveLength)
SEQNO_SIZE = 8  # py-libp2p and go-libp2p publishers: a big-endian uint64
MAX_FROM_SIZE = 64  # a peer id: 34-byte sha256 multihash, or an inlined key (<= 46)


def _message_ok(msg: Any, topics: Collection[str]) -> bool:
    names = list(msg.topicIDs)
    return (
        len(msg.seqno) == SEQNO_SIZE
        and 0 < len(msg.from_id) <= MAX_FROM_SIZE
        and bool(names)
        and all(isinstance(t, str) and t in topics for t in names)
    )


def _unique_ids(groups: Iterable[Any], limit: int) -> list[bytes]:
    """The distinct message ids of ``groups`` (at most ``limit``), each as py-libp2p
    will read it: its IHAVE/IWANT handlers pass every wire id through
    ``safe_bytes_from_hex``, which reads an ASCII-hex id as hex (any case, spaces
    between bytes), so deduplicating raw bytes let 2 000 spellings of one cached
    100 KB message's id build a 191 MiB reply. Ids it cannot read are dropped."""
    seen: dict[bytes, bytes] = {}  # id as py-libp2p reads it -> what we forward
    for group in groups:
        for wire in group.messageIDs:
            if len(seen) >= limit:
                return list(seen.values())
            mid = safe_bytes_from_hex(bytes(wire))
            if mid is None or mid in seen:
                continue
            # forwarded bytes must read back as ``mid``: a real id (peer id +
            # seqno, starting with a 0x00 or 0x12 multihash byte) reads as itself
            seen[mid] = mid if safe_bytes_from_hex(mid) == mid else mid.hex().encode()
    return list(seen.values())


def _trim_control(control: Any, topics: Collection[str]) -> None:
    def ours(entry: Any) -> bool:
        return isinstance(entry.topicID, str) and entry.topicID in topics

    ihave = [e for e in control.ihave if ours(e)]
    ihave_ids = _unique_ids(ihave, MAX_IDS_PER_RPC)
    iwant_ids = _unique_ids(control.iwant, MAX_IDS_PER_RPC)
    graft = {e.topicID: rpc_pb2.ControlGraft(topicID=e.topicID) for e in control.graft if ours(e)}
    # no peer exchange (PRUNE's peers): never dial who a peer tells us to
    prune = {
        e.topicID: rpc_pb2.ControlPrune(topicID=e.topicID, backoff=e.backoff)
        for e in control.prune
        if ours(e)
    }
    control.ClearField("ihave")
    control.ClearField("iwant")
    control.ClearField("graft")
    control.ClearField("prune")
    if ihave_ids:  # our topics are one in practice: ids go under the first
        control.ihave.append(rpc_pb2.ControlIHave(topicID=ihave[0].topicID, messageIDs=ihave_ids))
    if iwant_ids:
        control.iwant.append(rpc_pb2.ControlIWant(messageIDs=iwant_ids))
    control.graft.extend(graft.values())
    control.prune.extend(prune.values())


def trim_rpc(rpc: Any, topics: Collection[str]) -> None:
    """Trim ``rpc`` (an ``rpc_pb2.RPC``) in place to what py-libp2p can safely handle."""
    rpc.ClearField("senderRecord")  # never read: see the module docstring
    ok = [m for m in rpc.publish if _message_ok(m, topics)][:MAX_MESSAGES_PER_RPC]
    if len(ok) != len(rpc.publish):
        kept = [rpc_pb2.Message() for _ in ok]
        for copy, msg in zip(kept, ok, strict=True):
            copy.CopyFrom(msg)
        del rpc.publish[:]
        rpc.publish.extend(kept)
    if rpc.HasField("control"):
        _trim_control(rpc.control, topics)
        if rpc.control.ByteSize() == 0:
            rpc.ClearField("control")


class TrimmedStream:
    """Stands in for a peer's inbound meshsub stream in py-libp2p's read loop: each
    frame it reads is an RPC of the real stream, trimmed by :func:`trim_rpc` and
    framed again. Errors of the real stream (EOF, reset, oversized or malformed
    frame) pass through unchanged; everything else is the real stream's."""

    def __init__(self, stream: Any, topics: Collection[str], max_rpc_size: int) -> None:
        self._stream = stream
        self._topics = topics
        self._max = max_rpc_size
        self._buf = b""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def read(self, n: int | None = None) -> bytes:
        if not self._buf:
            raw = await read_varint_prefixed_bytes_limited(self._stream, self._max)
            rpc = rpc_pb2.RPC()
            rpc.ParseFromString(raw)  # DecodeError: handled by our stream handler
            trim_rpc(rpc, self._topics)
            self._buf = encode_varint_prefixed(rpc.SerializeToString())
        size = len(self._buf) if n is None or n < 0 else n
        out, self._buf = self._buf[:size], self._buf[size:]
        return out
