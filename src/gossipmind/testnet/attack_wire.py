"""Attacks on the wire: frames, streams and gossip messages (see :mod:`.attack`).

Also :func:`push_sync`, which delivers arbitrary op bytes through a sync session:
the path that bypasses the gossip validator, so the ops are judged at ingest.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, field

import trio

from gossipmind.core import encoding
from gossipmind.core.errors import ConfigError, NetworkError, SyncError
from gossipmind.core.identity import Identity
from gossipmind.net.gossip import encode_batch
from gossipmind.net.interface import MAX_FRAME_SIZE, MAX_GOSSIP_MESSAGE, Stream, StreamEOF
from gossipmind.node.syncer import SESSION_LIMIT
from gossipmind.sync import messages
from gossipmind.sync.messages import Bye, End, Hello, Ops, Sent
from gossipmind.sync.session import MAX_ROUNDS, frames
from gossipmind.testing import sample_report
from gossipmind.testnet.attack_peer import Expect, Hostile
from gossipmind.testnet.attack_peer import Sent as Did
from gossipmind.testnet.attack_probe import view

log = logging.getLogger("gossipmind.testnet.attack")

PUSH_ATTEMPTS = 40
STREAM_END_TIMEOUT = 10.0
BUSY_RETRIES = 50


def uvarint(n: int) -> bytes:
    """Unsigned LEB128, the frame length prefix (docs/sync.md §1)."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def hello(h: Hostile) -> Hello:
    """A hello that makes the responder send nothing and wait for us: our vv is
    the mirror's (current), our root is random (so it never says "in sync")."""
    r = h.store.replica
    return Hello(h.net, r.version_vector(), sorted(r.heads)[:1024], os.urandom(32), 0, [])


async def _send(stream: Stream, msg: messages.Message, did: Did) -> None:
    frame = messages.encode(msg)
    await stream.send(frame)
    did.frames += 1
    did.bytes += len(frame)


async def _push_once(h: Hostile, raws: list[bytes], did: Did) -> bool:
    stream = await h.open_sync()
    try:
        await _send(stream, hello(h), did)
        while True:  # the responder's hello, the ops we lack by vv, then sent
            msg = messages.decode(await stream.receive())
            if isinstance(msg, Bye):
                return False  # busy: it runs another session
            if isinstance(msg, Sent):
                break
        for frame in frames(iter(raws)):
            await _send(stream, frame, did)
        try:
            await _send(stream, End([]), did)
            for _ in range(MAX_ROUNDS + 2):  # it may want deps we do not have: want nothing
                msg = messages.decode(await stream.receive())
                if isinstance(msg, Bye):
                    break
                if isinstance(msg, End):
                    await _send(stream, End([]), did)
        except (NetworkError, SyncError, StreamEOF):
            pass  # it took the ops, then ended the session: forgeries are a protocol failure
        return True
    finally:
        await stream.close()


async def push_sync(h: Hostile, raws: list[bytes], did: Did) -> None:
    """Deliver ``raws`` to the target in one sync session (retrying while it is busy)."""
    for _ in range(PUSH_ATTEMPTS):
        try:
            with trio.fail_after(30):
                if await _push_once(h, raws, did):
                    did.ops += len(raws)
                    return
        except (NetworkError, SyncError, trio.TooSlowError) as exc:
            log.debug("sync push failed: %s", exc)
        await trio.sleep(0.25 + random.random() * 0.25)
    raise NetworkError(f"{h.target.name} refused every sync session for {PUSH_ATTEMPTS} tries")


async def _send_unframed(stream: Stream, data: bytes) -> None:
    """Bytes without a frame header (only the libp2p stream can)."""
    send = getattr(stream, "send_unframed", None)
    if send is None:
        raise ConfigError(f"{type(stream).__name__} cannot send unframed bytes")
    await send(data)


async def _ending(stream: Stream, timeout: float = STREAM_END_TIMEOUT) -> str:
    """Read until the target ends the stream: ``dropped`` (it reset or closed it),
    ``refused (<reason>)`` (it said bye first: busy, or later when we are penalized),
    or ``open`` if it did neither within ``timeout``."""
    deadline = trio.current_time() + timeout
    try:
        while trio.current_time() < deadline:
            with trio.move_on_at(deadline):
                msg = messages.decode(await stream.receive())
                if isinstance(msg, Bye):
                    return f"refused ({msg.reason})"
    except (StreamEOF, NetworkError, SyncError):
        return "dropped"
    return "open"


def _tally(out: dict[str, int], key: str) -> None:
    out[key] = out.get(key, 0) + 1


# -- oversized and truncated frames ------------------------------------------------------


def _junk_op(size: int) -> bytes:
    return os.urandom(size)


async def stream_outcome(stream: Stream, data: bytes, *, framed: bool, close: bool) -> str:
    """Send ``data`` on ``stream`` (closing our side after it if ``close``), see how
    the other side ends it (:func:`_ending`), then reset the stream."""
    try:
        await (stream.send(data) if framed else _send_unframed(stream, data))
        if close:
            await stream.close()
    except NetworkError as exc:  # it reset the stream while we were still writing
        log.debug("malformed stream: %s", exc)
    outcome = await _ending(stream)
    await stream.reset()
    return outcome


async def _malformed_stream(h: Hostile, data: bytes, *, framed: bool, close: bool) -> str:
    """Send ``data`` on a sync stream and see how the target ends it.

    A stream the target refused as busy (another session ran) never had its bytes
    read: try again. We may not see that refusal: once in 40 runs of the
    oversized-frame attack its bye never reached us and the stream looked dropped,
    so the attack expected a failure the node never counted. Hence the target's
    own count of busy refusals: if it grew while our stream ran, the stream may
    have been one of them (or an honest peer's was), and we try again; only a bye
    saying ``later`` is sure to be ours."""
    outcome = "not sent"
    for _ in range(BUSY_RETRIES):
        before = await h.busy_refusals()
        outcome = await stream_outcome(await h.open_sync(), data, framed=framed, close=close)
        if outcome == "refused (later)":
            break
        if outcome != "refused (busy)" and await h.busy_refusals() == before:
            break
        await trio.sleep(0.1)
    return outcome


async def oversized_frame(h: Hostile, count: int) -> Did:
    """Sync frames over 1 MiB (one real, the others only announced), gossip messages
    over 256 KiB, and ops over 64 KiB inside a gossip message."""
    did = Did()
    streams = max(1, count // 2)
    ends: dict[str, int] = {}
    for i in range(streams):
        if i == 0:
            data, framed = os.urandom(MAX_FRAME_SIZE + 1024), True
        else:
            data, framed = uvarint(1 << 30) + os.urandom(64), False  # announces 1 GiB
        _tally(ends, await _malformed_stream(h, data, framed=framed, close=False))
        did.frames += 1
        did.bytes += len(data)
    big = encode_batch([_junk_op(60_000) for _ in range(5)])  # ~300 KiB > 256 KiB
    assert len(big) > MAX_GOSSIP_MESSAGE
    fat_op = encode_batch([_junk_op(70 * 1024)])  # one "op" over 64 KiB
    rest = count - streams
    n_big, n_fat = (rest + 1) // 2, rest // 2
    for i in range(rest):
        await h.publish(big if i % 2 == 0 else fat_op)
    did.messages = rest
    did.bytes += n_big * len(big) + n_fat * len(fat_op)
    did.details = {"sync_streams": streams, "stream_ends": ends}
    did.expect = [
        Expect("sync_failed", "frame_too_large", 1),
        Expect("sync_guarded", "frame_too_large", ends.get("dropped", 0) + _later(ends)),
        Expect("gossip", "oversized", n_big),
        Expect("gossip", "op_oversized", n_fat),
    ]
    return did


def _later(ends: dict[str, int]) -> int:
    return sum(n for k, n in ends.items() if k.endswith("refused (later)"))


async def truncated_frame(h: Hostile, count: int) -> Did:
    """Sync streams that end inside a frame (its body, its length prefix) or carry a
    cut sync message, and gossip messages cut short."""
    did = Did()
    streams = max(1, count // 2)
    hello_frame = messages.encode(hello(h))
    ends: dict[str, int] = {}
    for i in range(streams):
        variant = ("body", "prefix", "message")[i % 3]
        if variant == "body":
            data, framed = uvarint(1000) + os.urandom(10), False
        elif variant == "prefix":
            data, framed = b"\x80\x80", False
        else:
            data, framed = hello_frame[: len(hello_frame) // 2], True
        end = await _malformed_stream(h, data, framed=framed, close=True)
        _tally(ends, f"{variant}: {end}")
        did.frames += 1
        did.bytes += len(data)
    ident = Identity(os.urandom(32))
    whole = encode_batch([h.forge(ident, "pattern.report", sample_report()).raw])
    messages_n = count - streams
    for i in range(messages_n):
        data = whole[: max(1, len(whole) - 1 - i % 50)]
        await h.publish(data)
        did.bytes += len(data)
    did.messages = messages_n
    did.details = {"stream_ends": ends}
    dropped = sum(n for k, n in ends.items() if k.endswith("dropped"))
    did.expect = [
        Expect("sync_failed", "truncated", 1),
        Expect("sync_guarded", "truncated|protocol", dropped + _later(ends)),
        Expect("gossip", "encoding", messages_n),
    ]
    return did


# -- junk gossip ---------------------------------------------------------------------------


def _junk_message(rng: random.Random) -> bytes:
    pick = rng.randrange(4)
    if pick == 0:  # random bytes
        return rng.randbytes(rng.randrange(1, 4096))
    if pick == 1:  # canonical msgpack, wrong shape
        return encoding.encode({"junk": rng.randbytes(rng.randrange(1, 512))})
    if pick == 2:  # an array of random "ops"
        return encode_batch([rng.randbytes(rng.randrange(10, 600)) for _ in range(8)])
    return encoding.encode([rng.randrange(1 << 30) for _ in range(rng.randrange(1, 64))])


async def junk_gossip(h: Hostile, count: int) -> Did:
    """Garbage on the topic as fast as the transport lets us publish."""
    did = Did()
    rng = random.Random(int.from_bytes(os.urandom(8), "big"))
    for _ in range(count):
        data = _junk_message(rng)
        await h.publish(data)
        did.bytes += len(data)
        did.messages += 1
    did.expect = [Expect("gossip", "*", count)]
    return did


# -- slow sync -------------------------------------------------------------------------------


@dataclass
class _Slow:
    outcome: str = "never held"  # what ended our last session: dropped | held | ...
    refused: dict[str, int] = field(default_factory=dict)  # by the target's reason
    sessions: int = 0  # sessions the target ran with us (its one session slot was ours)
    held_s: float = 0.0  # seconds we held sessions in all
    longest_s: float = 0.0
    holding: trio.Event = field(default_factory=trio.Event)


async def _slow_session(h: Hostile, trickle: float | None, out: _Slow) -> None:
    """One session: hello, then stall (or trickle) until the target drops it."""
    did = Did()
    stream = await h.open_sync()
    start = trio.current_time()
    out.outcome = "held"
    try:
        await _send(stream, hello(h), did)
        async with trio.open_nursery() as nursery:
            try:
                while True:
                    msg = messages.decode(await stream.receive())
                    if isinstance(msg, Bye):
                        out.refused[msg.reason] = out.refused.get(msg.reason, 0) + 1
                        out.outcome = f"refused ({msg.reason})"
                        break
                    if isinstance(msg, Hello):  # it runs our session: its slot is ours
                        out.holding.set()
                        if trickle is not None:
                            nursery.start_soon(_trickle, stream, trickle)
            except (StreamEOF, NetworkError):
                out.outcome = "dropped"
            finally:
                nursery.cancel_scope.cancel()
    finally:
        held = trio.current_time() - start
        if out.outcome in ("dropped", "held"):
            out.sessions += 1
            out.held_s += held
            out.longest_s = max(out.longest_s, held)
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await stream.reset()


async def _slow_stream(h: Hostile, trickle: float | None, out: _Slow) -> None:
    """Open sessions one after another (until cancelled): a refused one is retried
    at once, because the target's one session slot is what we are after."""
    while True:
        try:
            await _slow_session(h, trickle, out)
        except (NetworkError, SyncError) as exc:
            log.debug("slow stream: %s", exc)
        await trio.sleep(0.05)


async def _trickle(stream: Stream, every: float) -> None:
    """Keep a session alive with empty ``ops`` frames: a frame before every timeout."""
    frame = messages.encode(Ops([]))
    while True:
        await trio.sleep(every)
        try:
            await stream.send(frame)
        except NetworkError:  # the target dropped us: the session's reader sees it too
            return  # (raised here, it escaped the session's nursery and ended the attack)


async def slow_sync(h: Hostile, count: int) -> Did:
    """``count`` sync streams that say hello, then stall, and start over as soon as
    they are dropped or refused; the first keeps its session alive with an empty
    frame before every timeout (a slowloris). Lasts long enough for the session
    deadline (SESSION_LIMIT timeouts) and one more stall. Measures how long the
    target's one session slot was ours; the node report shows how many honest
    sessions it still ran."""
    did = Did()
    timeout = h.tn.config(h.target.name).sync_timeout
    hold = (SESSION_LIMIT + 2) * timeout + 2
    slows = [_Slow() for _ in range(count)]
    start = time.monotonic()
    with trio.move_on_after(hold):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_slow_stream, h, timeout / 2, slows[0])
            with trio.move_on_after(timeout):  # the trickler first, so it gets the slot
                await slows[0].holding.wait()
            for slow in slows[1:]:
                nursery.start_soon(_slow_stream, h, None, slow)
    elapsed = time.monotonic() - start
    refused: dict[str, int] = {}
    for s in slows:
        for reason, n in s.refused.items():
            refused[reason] = refused.get(reason, 0) + n
    did.frames = sum(s.sessions for s in slows) + sum(refused.values())
    did.details = {
        "sync_timeout": timeout,
        "attack_s": round(elapsed, 1),
        "sessions_held": sum(s.sessions for s in slows),
        "refused": refused,
        "slot_held_share": round(sum(s.held_s for s in slows) / elapsed, 2),
        "trickler_longest_s": round(slows[0].longest_s, 1),
        "longest_stall_s": round(max(s.longest_s for s in slows[1:] or slows), 1),
    }
    did.expect = []
    if slows[0].sessions:
        did.expect.append(Expect("sync_failed", "deadline", 1))
    if refused.get("later"):
        did.expect.append(Expect("sync", "refused_penalized", 1))
    return did


# -- reconnect flood ---------------------------------------------------------------------


async def reconnect_flood(h: Hostile, count: int) -> Did:
    """Connect to the target and drop the connection, ``count`` times over: each is
    a Noise handshake and a Yamux session for the target, and py-libp2p 0.8.1 keeps
    a task per inbound connection until the host stops."""
    did = Did()
    target = h.target
    before = await h.ask(view, h.tn, target.name)
    refused = 0
    for _ in range(count):
        await h.transport.disconnect(target.peer_id)
        try:
            await h.transport.connect(target.addr)
        except NetworkError as exc:
            refused += 1
            log.debug("reconnect refused: %s", exc)
        did.frames += 1
    await trio.sleep(1)  # let the target finish closing what we dropped
    after = await h.ask(view, h.tn, target.name)
    growth = after.rss_kib - before.rss_kib
    did.details = {
        "connections": count,
        "refused": refused,
        "target_process_rss_growth_kib": growth,
        "per_connection_kib": round(growth / count, 1),
    }
    await h.connect()
    return did
