"""Batched gossip of ops: the message format, the batcher and the validator.

py-libp2p gossip costs ~2 ms of CPU per message per link whatever its size
(LIBP2P_NOTES), so a node gossips **one message per interval** holding every op it
has to push, instead of one message per op.

Message format (docs/protocol.md): the canonical msgpack encoding
(:func:`gossipmind.core.encoding.encode`) of a non-empty array of op byte strings,
each a complete encoded op, no duplicates, at most :data:`MAX_BATCH_OPS` ops and
:data:`~gossipmind.net.interface.MAX_GOSSIP_MESSAGE` bytes in all.

The validator (:func:`make_validator`) is synchronous and cheap: py-libp2p calls
it on every message before delivering or forwarding it, so a rejected message
goes nowhere. It accepts a message only if every op in it decodes, belongs to the
network (``op.net == net_id``, or is the network's genesis) and carries a valid
signature. Signature checks are remembered in a bounded LRU of op ids, so an op
is verified once even if it arrives in several messages, and the node can ingest
the ops of an accepted message with ``verified=True`` (:meth:`BatchValidator.decode`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgpack
import trio

from gossipmind.core import encoding
from gossipmind.core import ops as opsmod
from gossipmind.core.errors import EncodingError, GossipmindError, InvalidOp, NetworkError
from gossipmind.core.ops import MAX_OP_SIZE, Op
from gossipmind.net.interface import MAX_GOSSIP_MESSAGE

if TYPE_CHECKING:
    from trio_typing import TaskStatus  # trio-stubs (installed with libp2p) shadow trio's own

log = logging.getLogger(__name__)

MAX_BATCH_OPS = 4096
DEFAULT_INTERVAL = 0.075
DEFAULT_CACHE_SIZE = 65536
DEFAULT_MAX_PENDING_BYTES = 16 * 1024 * 1024
ACCEPTED_CACHE = 32  # accepted messages whose decoded ops wait for BatchValidator.decode
Entry = tuple[bytes, bytes, Op | None]  # op id, raw op, decoded op (None: verified before)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _bin_overhead(n: int) -> int:
    """Bytes msgpack adds in front of a bin of length ``n``."""
    return 2 if n < 2**8 else 3 if n < 2**16 else 5


def encode_batch(raw_ops: Iterable[bytes]) -> bytes:
    """Encode op byte strings as one gossip message (no size checks)."""
    return encoding.encode([bytes(r) for r in raw_ops])


def decode_batch(data: bytes) -> list[bytes]:
    """Decode the envelope of a gossip message; :class:`InvalidOp` on a bad one.

    Checks size, canonical encoding, shape and bounds, not the ops themselves.
    """
    if len(data) > MAX_GOSSIP_MESSAGE:
        raise InvalidOp("oversized", f"message of {len(data)} bytes (max {MAX_GOSSIP_MESSAGE})")
    # The shape first, from the headers: decoding 256 KiB of nested containers
    # costs ~0.3 s, and the validator runs on the event loop.
    shape = _shape(data)
    if shape == "too_many":
        raise InvalidOp("too_many_ops", f"more than {MAX_BATCH_OPS} ops")
    if shape == "cut":
        raise InvalidOp("encoding", "truncated, or bytes after the message")
    if shape == "other":
        try:  # not an array of bins: decoded (bounded) only to name the reason
            msgpack.unpackb(data, max_array_len=64, max_map_len=64, max_str_len=1024)
        except Exception as exc:  # noqa: BLE001 - any failure means "not msgpack"
            raise InvalidOp("encoding", f"not valid msgpack: {exc!r}"[:200]) from None
        raise InvalidOp("envelope", "a gossip message is an array of byte strings")
    try:
        doc = encoding.decode(data)
    except EncodingError as exc:
        raise InvalidOp("encoding", str(exc)) from exc
    if not isinstance(doc, list) or not all(isinstance(r, bytes) for r in doc):
        raise InvalidOp("envelope", "a gossip message is an array of byte strings")
    if not doc:
        raise InvalidOp("empty", "a gossip message holds at least one op")
    if len(doc) > MAX_BATCH_OPS:
        raise InvalidOp("too_many_ops", f"{len(doc)} ops (max {MAX_BATCH_OPS})")
    return doc


def _shape(data: bytes) -> str:
    """The shape of ``data`` from its msgpack headers alone (no value decoded):
    ``"bins"`` (an array of bins and nothing more), ``"too_many"`` (an array of
    over MAX_BATCH_OPS), ``"cut"`` (an array of bins, cut short or with bytes
    after it) or ``"other"``."""
    n, tag = len(data), data[0] if data else 0
    if 0x90 <= tag <= 0x9F:
        count, pos = tag & 0x0F, 1
    elif tag == 0xDC and n >= 3:
        count, pos = int.from_bytes(data[1:3], "big"), 3
    elif tag == 0xDD and n >= 5:
        count, pos = int.from_bytes(data[1:5], "big"), 5
    else:
        return "other"
    if count > MAX_BATCH_OPS:
        return "too_many"
    for _ in range(count):
        if pos >= n:
            return "cut"
        width = _BIN_WIDTH.get(data[pos], 0)
        if not width:
            return "other"
        if pos + 1 + width > n:
            return "cut"
        pos += 1 + width + int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
    return "bins" if pos == n else "cut"


_BIN_WIDTH = {0xC4: 1, 0xC5: 2, 0xC6: 4}


@dataclass(slots=True)
class ValidatorStats:
    """What the validator saw. ``rejected`` counts messages by reason code."""

    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    signatures_checked: int = 0
    signatures_cached: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class BatchValidator:
    """``validator(data) -> bool`` for one network; see the module docstring.

    Reason codes in :attr:`stats.rejected`: ``oversized``, ``encoding``,
    ``envelope``, ``empty``, ``too_many_ops``, ``duplicate``, ``wrong_network``,
    ``signature``, and ``op_<code>`` for an op that fails
    :func:`gossipmind.core.ops.decode` with ``InvalidOp(code)``.
    """

    def __init__(self, net_id: bytes, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if len(net_id) != opsmod.ID_SIZE:
            raise ValueError("a network id is 32 bytes")
        if cache_size < 1:
            raise ValueError("cache_size must be positive")
        self.net_id = bytes(net_id)
        self.stats = ValidatorStats()
        self._cache_size = cache_size
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        # ops of the last messages accepted, so decode() does not decode them again
        self._accepted: OrderedDict[bytes, list[Entry]] = OrderedDict()

    def __call__(self, data: bytes) -> bool:
        try:
            entries = self._check(data)
        except InvalidOp as exc:
            self.stats.rejected[exc.code] += 1
            log.debug("gossip message rejected: %s", exc)
            return False
        self._accept(data, entries)
        return True

    def _accept(self, data: bytes, entries: list[Entry]) -> None:
        self.stats.accepted += 1
        self._accepted[_digest(data)] = entries
        while len(self._accepted) > ACCEPTED_CACHE:
            self._accepted.popitem(last=False)

    def check(self, data: bytes) -> list[Op]:
        """Validate a message; return its ops, or raise :class:`InvalidOp`."""
        return [op or opsmod.decode(raw) for _, raw, op in self._check(data)]

    def _check(self, data: bytes) -> list[Entry]:
        """Validate a message: its ops as (id, raw, op) entries, ``op`` None for an op
        whose exact bytes were verified before (by id, the hash of those bytes): it is
        neither decoded nor verified again (under load most of a message's ops may
        have arrived by sync already)."""
        entries: list[Entry] = []
        seen: set[bytes] = set()
        for raw in decode_batch(data):
            oid = opsmod.op_id(raw)
            if oid in seen:
                raise InvalidOp("duplicate", f"op {oid.hex()[:12]} twice in one message")
            seen.add(oid)
            if oid in self._verified:
                self._verified.move_to_end(oid)
                self.stats.signatures_cached += 1
                entries.append((oid, raw, None))
                continue
            try:
                op = opsmod.decode(raw)
            except InvalidOp as exc:
                raise InvalidOp(f"op_{exc.code}", exc.detail) from exc
            if op.net != self.net_id and not (op.is_genesis and op.id == self.net_id):
                raise InvalidOp("wrong_network", f"op {op.short()} is for another network")
            entries.append((oid, raw, op))
        for _, _, new in entries:
            if new is None:
                continue
            self.stats.signatures_checked += 1
            if not new.verify_signature():
                raise InvalidOp("signature", f"op {new.short()} has a bad signature")
            # the op's own id object (equal to oid), which the replica keeps for the
            # op: the cache shares it instead of holding a copy (~65 B an entry)
            self.mark_verified(new.id)
        return entries

    def is_verified(self, op_id: bytes) -> bool:
        return op_id in self._verified

    def mark_verified(self, op_id: bytes) -> None:
        """Remember that the op with this id has a valid signature (e.g. we signed it)."""
        self._verified[op_id] = None
        self._verified.move_to_end(op_id)
        while len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)

    def decode(
        self, data: bytes, known: Callable[[bytes], bool] | None = None
    ) -> tuple[list[tuple[Op, bool]], int]:
        """The ops of an accepted message, each with ``verified`` for ingest, and how
        many ops the message carried.

        Ops for which ``known(id)`` is true (already applied, pending or rejected
        here) are left out when the validator did not decode them. ``verified`` is
        True when this validator checked the op's signature recently (normally all of
        them); False means "verify again before applying". Raises
        :class:`InvalidOp` if ``data`` is not a well-formed message.
        """
        entries = self._accepted.pop(_digest(data), None)
        if entries is None:
            entries = [(op.id, op.raw, op) for op in map(opsmod.decode, decode_batch(data))]
        out: list[tuple[Op, bool]] = []
        for oid, raw, op in entries:
            if op is None:
                if known is not None and known(oid):
                    continue
                op = opsmod.decode(raw)
            out.append((op, oid in self._verified))
        return out, len(entries)


def make_validator(net_id: bytes, *, cache_size: int = DEFAULT_CACHE_SIZE) -> BatchValidator:
    """The gossip validator for network ``net_id`` (the genesis op id)."""
    return BatchValidator(net_id, cache_size=cache_size)


@dataclass(slots=True)
class BatcherStats:
    messages: int = 0
    ops: int = 0
    bytes: int = 0
    duplicates: int = 0
    publish_errors: int = 0


class GossipBatcher:
    """Collects op bytes and publishes them as batches, one message per interval.

    A batch leaves ``interval`` seconds after the previous one left — at once if
    the batcher was idle that long, so a lone op pays no batching delay — or as
    soon as ``max_bytes`` are waiting; it never exceeds ``max_bytes`` encoded, nor
    ``max_ops`` ops. Under load that is still one message per interval.
    :meth:`put` waits while more than ``max_pending_bytes`` are queued, which
    passes the transport's back-pressure on to the producer.

    Run it with ``nursery.start(batcher.run)``; ``publish`` is normally
    ``transport.publish``. A failed publish is logged and counted, never raised:
    gossip is best effort and anti-entropy repairs what it loses.
    """

    def __init__(
        self,
        publish: Callable[[bytes], Awaitable[None]],
        *,
        interval: float = DEFAULT_INTERVAL,
        max_bytes: int = MAX_GOSSIP_MESSAGE,
        max_ops: int = MAX_BATCH_OPS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        if max_bytes < MAX_OP_SIZE + 16:
            raise ValueError(f"max_bytes must hold at least one maximal op ({MAX_OP_SIZE} B)")
        if interval <= 0 or max_ops < 1 or max_pending_bytes < max_bytes:
            raise ValueError("bad batcher limits")
        self._publish = publish
        self._interval = interval
        self._max_bytes = max_bytes
        self._max_ops = max_ops
        self._max_pending = max_pending_bytes
        self._queue: OrderedDict[bytes, bytes] = OrderedDict()
        self._queued_bytes = 0
        self._wakeup = trio.Event()
        self._space = trio.Event()
        self._flushed = trio.Event()
        self._flush_requested = False
        self._inflight = False
        self.stats = BatcherStats()

    @property
    def pending(self) -> int:
        """Ops waiting to be published."""
        return len(self._queue)

    @property
    def interval(self) -> float:
        """Seconds between batches under load (the owner may adapt it at any time)."""
        return self._interval

    @interval.setter
    def interval(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("interval must be positive")
        self._interval = seconds

    def put_nowait(self, raw: bytes) -> bool:
        """Queue an op; False (nothing queued) if the queue is full."""
        raw = bytes(raw)
        if len(raw) > MAX_OP_SIZE:
            raise NetworkError(f"op of {len(raw)} bytes exceeds {MAX_OP_SIZE}")
        oid = opsmod.op_id(raw)
        if oid in self._queue:
            self.stats.duplicates += 1
            return True
        if self._queued_bytes + len(raw) > self._max_pending:
            return False
        self._queue[oid] = raw
        self._queued_bytes += len(raw)
        self._wakeup.set()
        return True

    async def put(self, raw: bytes) -> None:
        """Queue an op, waiting while the queue is full."""
        while not self.put_nowait(raw):
            if self._space.is_set():
                self._space = trio.Event()
            await self._space.wait()

    async def flush(self) -> None:
        """Publish what is queued now, without waiting for the interval; return when
        every queued op has been handed to ``publish``. Needs :meth:`run` running."""
        while self._queue or self._inflight:
            if self._flushed.is_set():
                self._flushed = trio.Event()
            self._flush_requested = True
            self._wakeup.set()
            await self._flushed.wait()

    def _take_batch(self) -> list[bytes]:
        batch: list[bytes] = []
        size = 5  # the largest array header
        while self._queue and len(batch) < self._max_ops:
            oid, raw = next(iter(self._queue.items()))
            cost = len(raw) + _bin_overhead(len(raw))
            if batch and size + cost > self._max_bytes:
                break
            batch.append(raw)
            size += cost
            del self._queue[oid]
            self._queued_bytes -= len(raw)
        return batch

    def _publish_now(self) -> bool:
        return (
            self._flush_requested
            or self._queued_bytes >= self._max_bytes
            or len(self._queue) >= self._max_ops
        )

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish batches until cancelled."""
        task_status.started()
        last = -math.inf  # when the previous batch left
        while True:
            if not self._queue:
                self._flush_requested = False
                self._flushed.set()
                self._wakeup = trio.Event()
                await self._wakeup.wait()
            with trio.move_on_at(last + self._interval):
                while not self._publish_now():
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
            last = trio.current_time()
            self._inflight = True
            try:
                await self._publish_one()
            finally:
                self._inflight = False

    async def _publish_one(self) -> None:
        batch = self._take_batch()
        if not batch:
            return
        self._space.set()
        message = encode_batch(batch)
        try:
            await self._publish(message)
        except GossipmindError as exc:
            # Best effort: gossip loss is repaired by anti-entropy sync.
            self.stats.publish_errors += 1
            log.warning("gossip publish of %d ops failed: %s", len(batch), exc)
            return
        self.stats.messages += 1
        self.stats.ops += len(batch)
        self.stats.bytes += len(message)
