"""The sync session: a pure state machine (no sockets, no clock).

Both ends of a stream run a :class:`Session`. The initiator sends ``hello``;
the responder answers ``hello``, streams the ops the initiator lacks by version
vector, then ``sent``. The initiator streams the ops the responder lacks, then
``end`` with the ids it still wants (unknown heads of the peer and deps its
pending ops wait for: forks and gaps). Each ``end`` is answered with the wanted
ops and an ``end`` of one's own, until both sides want nothing (``bye``) or the
round limit is reached. Catch-up cost is proportional to what is missing: the
only fixed cost is the version vector and the heads.

The driver feeds received messages to :meth:`Session.receive`, ingests the ops
it returns *before* feeding the next message, and sends what it returns.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

from gossipmind.core.errors import SyncError
from gossipmind.sync.messages import (
    MAX_IDS,
    MAX_OPS_FRAME,
    Bye,
    End,
    Hello,
    Message,
    Ops,
    Sent,
)
from gossipmind.sync.source import OpSource

MAX_ROUNDS = 16


@dataclass
class Step:
    send: Iterator[Message] = field(default_factory=lambda: iter(()))
    ops: list[bytes] = field(default_factory=list)  # received: ingest before the next message
    done: bool = False


def frames(raws: Iterator[bytes], limit: int = MAX_OPS_FRAME) -> Iterator[Ops]:
    """Group raw ops into ``ops`` frames of at most ``limit`` bytes of ops."""
    batch: list[bytes] = []
    size = 0
    for raw in raws:
        if batch and size + len(raw) > limit:
            yield Ops(batch)
            batch, size = [], 0
        batch.append(raw)
        size += len(raw)
    if batch:
        yield Ops(batch)


def listed_heads(heads: list[bytes], nonce: bytes) -> list[bytes]:
    """The heads a hello lists, sorted: all of them, or :data:`MAX_IDS` of them
    picked by ``nonce`` if there are more (the smallest by BLAKE2b(nonce || id)).

    A peer learns of ops its version vector cannot show (forks at a seq it holds)
    only as our heads. An equivocating member makes one head per fork, so a
    replica can hold far more than a hello lists; always listing the same ones
    (the smallest ids) hid the others from every peer for good, and two replicas
    kept different roots however often they synced. With a new nonce for each
    session (the driver picks it: this module does no I/O), each session names
    another sample and fetches what it names, until none is missing.
    """
    if len(heads) <= MAX_IDS:
        return sorted(heads)

    def rank(h: bytes) -> bytes:
        return hashlib.blake2b(nonce + h, digest_size=16).digest()

    return sorted(heapq.nsmallest(MAX_IDS, heads, key=rank))


@dataclass
class Stats:
    ops_sent: int = 0
    op_bytes_sent: int = 0
    ops_received: int = 0
    rounds: int = 0


class Session:
    def __init__(
        self,
        source: OpSource,
        *,
        initiator: bool,
        peers: list[str] | None = None,
        nonce: bytes = b"",
    ):
        self.source = source
        self.nonce = nonce  # picks the heads a hello lists when there are too many
        self.initiator = initiator
        self.peers = peers or []
        self.peer: Hello | None = None
        self.done = False
        self.rounds = 0
        self.stats = Stats()
        self._peer_sent = False
        self._asked: set[bytes] = set()  # ids we asked for in this session
        self._served: set[bytes] = set()  # ids the peer asked us for (served once)
        self._moved = True  # ops went either way since we last asked (see _want)
        self.declined = ""  # why the session ended before both hellos ("" if it did not)
        self._sent_root: bytes | None = None  # the root in the hello we sent (initiator)

    @property
    def completed(self) -> bool:
        """Ended after both sides said hello: a real exchange, not a refusal."""
        return self.done and self.peer is not None

    def hello(self) -> Hello:
        s = self.source
        heads = listed_heads(s.heads(), self.nonce)
        return Hello(s.net, s.version_vector(), heads, s.root(), s.count(), self.peers)

    def start(self) -> Iterator[Message]:
        """Messages the initiator sends first (the responder sends nothing)."""
        if not self.initiator:
            return iter(())
        hello = self.hello()
        self._sent_root = hello.root
        return iter([hello])

    def _counted(self, msgs: Iterator[Message]) -> Iterator[Message]:
        for m in msgs:
            if isinstance(m, Ops):
                self._moved = self._moved or bool(m.ops)
                self.stats.ops_sent += len(m.ops)
                self.stats.op_bytes_sent += sum(len(o) for o in m.ops)
            yield m

    def _missing_for_peer(self) -> Iterator[Message]:
        assert self.peer is not None
        return frames(self.source.missing_for(self.peer.vv))

    def _want(self) -> list[bytes]:
        """Ids to ask for: the peer's unknown heads and the deps our pending ops wait for.

        Only when ops moved (either way) since we last asked: otherwise the peer
        has nothing more for us, and asking again would only repeat the same list.
        Without this rule, deps that exist nowhere (anyone can send ops whose deps
        never arrive; they wait in the pending buffer) were asked for in every
        round of every session: 16 rounds of up to 32 KiB each way. The peer's
        unknown heads come first (it holds them), then ids not asked yet.
        """
        assert self.peer is not None
        if not self._moved:
            return []
        self._moved = False
        has = self.source.has
        heads = sorted(h for h in self.peer.heads if not has(h))
        deps = self.source.wanted().difference(heads)
        fresh = sorted(deps - self._asked)
        again = sorted(deps & self._asked)
        out = (heads + fresh + again)[:MAX_IDS]
        self._asked.update(out)
        return out

    def receive(self, msg: Message) -> Step:
        if self.done:
            raise SyncError("message after the session ended")
        if isinstance(msg, Hello):
            return self._on_hello(msg)
        if isinstance(msg, Bye):
            self.done = True
            if self.peer is None:  # refused before any exchange: busy, later, wrong network
                self.declined = msg.reason or "bye"
            return Step(done=True)
        if self.peer is None:
            raise SyncError(f"{type(msg).__name__.lower()} before hello")
        if isinstance(msg, Ops):
            self.stats.ops_received += len(msg.ops)
            self._moved = self._moved or bool(msg.ops)
            return Step(ops=msg.ops)
        if isinstance(msg, Sent):
            if not self.initiator or self._peer_sent:
                raise SyncError("unexpected sent")
            self._peer_sent = True
            tail = iter([End(self._want_after_transfer())])
            return Step(send=self._counted(_chain(self._missing_for_peer(), tail)))
        return self._on_end(msg)

    def _want_after_transfer(self) -> list[bytes]:
        # called before the ops we send are ingested by the peer; our own view is current
        return self._want()

    def _on_hello(self, msg: Hello) -> Step:
        if self.peer is not None:
            raise SyncError("second hello")
        if msg.net != self.source.net:
            self.done = True
            self.declined = "wrong network"
            return Step(send=iter([Bye("wrong network")]), done=True)
        self.peer = msg
        # Equal roots: both hold the same valid ops, so neither can give the other
        # anything, not even the deps its pending ops wait for (only valid ops are
        # served). Nothing to do, whatever the pending buffers hold.
        if self.initiator:
            # the roots *in the two hellos*, as the responder compared them: ours may
            # have moved since we said hello (gossip, a write), and comparing the
            # current one left both sides waiting for the other until the timeout
            if msg.root == self._sent_root:
                self.done = True
                return Step(send=iter([Bye("in sync")]), done=True)
            return Step()
        if msg.root == self.source.root():
            return Step(send=iter([self.hello()]))  # the initiator will say bye
        head = iter([self.hello()])
        return Step(send=self._counted(_chain(head, self._missing_for_peer(), iter([Sent()]))))

    def _on_end(self, msg: End) -> Step:
        self.rounds += 1
        self.stats.rounds = self.rounds
        # each id at most once per session: duplicates in a want, or asking again
        # for what was served, would make a small frame cost many large ones
        ids = [i for i in dict.fromkeys(msg.want) if i not in self._served]
        self._served.update(ids)
        give = frames(iter(self.source.get_raw(ids))) if ids else iter(())
        want = self._want()
        if (not want and not msg.want) or self.rounds >= MAX_ROUNDS:
            self.done = True
            reason = "satisfied" if not want else "round limit"
            return Step(send=self._counted(_chain(give, iter([Bye(reason)]))), done=True)
        return Step(send=self._counted(_chain(give, iter([End(want)]))))


def _chain(*its: Iterator[Message]) -> Iterator[Message]:
    for it in its:
        yield from it
