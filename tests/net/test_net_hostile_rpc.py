"""Well-framed but hostile pubsub RPCs from one peer: the node neither dies, stalls,
nor keeps state for them (see gossipmind.net.rpcguard)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.envelope import seal_record
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PeerRecord
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.utils import safe_bytes_from_hex
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX
from libp2p.utils.varint import encode_uvarint

from gossipmind.net.host import Libp2pTransport, open_libp2p_transport
from gossipmind.net.interface import Stream, TransportConfig
from gossipmind.net.pubsub import split_publish
from gossipmind.net.rpcguard import MAX_MESSAGES_PER_RPC, trim_rpc

TOPIC = "gossipmind/" + "ab" * 32 + "/ops/1"


def cfg() -> TransportConfig:
    return TransportConfig(seed=os.urandom(32), topic=TOPIC)


Trio = tuple[Libp2pTransport, Libp2pTransport, Libp2pTransport, Stream]


@asynccontextmanager
async def victim_honest_attacker(
    validator: Callable[[bytes], bool] = lambda _d: True,
) -> AsyncIterator[Trio]:
    """a (victim), b (honest, connected to a), x (attacker, with a raw meshsub stream to a)."""
    with trio.fail_after(60):
        async with (
            open_libp2p_transport(cfg(), validator) as a,
            open_libp2p_transport(cfg(), lambda _d: True) as b,
            open_libp2p_transport(cfg(), lambda _d: True) as x,
        ):
            await b.connect(a.addrs()[0])
            await x.connect(a.addrs()[0])
            stream = await x.open_stream(a.peer_id, "/meshsub/1.1.0")
            while host(x).get_id() not in pubsub(a).peer_topics.get(TOPIC, ()):
                await trio.sleep(0.01)  # x's own subscription arrived: see processed()
            yield a, b, x, stream


def pubsub(t: Libp2pTransport) -> Any:
    return t._pubsub  # white-box: the state an attack would grow


def host(t: Libp2pTransport) -> Any:
    return t._host


async def processed(a: Libp2pTransport, x: Libp2pTransport, stream: Stream) -> None:
    """Return once a has read everything x sent before on ``stream``: RPCs of one
    stream are handled in order, and an unsubscribe/subscribe round trip shows."""
    ps, xid = pubsub(a), host(x).get_id()
    for subscribe in (False, True):
        sub = rpc_pb2.RPC.SubOpts(subscribe=subscribe, topicid=TOPIC)
        await stream.send(rpc_pb2.RPC(subscriptions=[sub]).SerializeToString())
        while (xid in ps.peer_topics.get(TOPIC, ())) != subscribe:
            await trio.sleep(0.01)


async def still_serves(a: Libp2pTransport, b: Libp2pTransport, tag: bytes) -> list[bytes]:
    """a still delivers b's gossip (retried: the mesh forms within a heartbeat);
    returns what a delivered before it."""
    before: list[bytes] = []
    for _ in range(50):
        await b.publish(tag)
        with trio.move_on_after(0.2):
            while (data := (await a.messages().receive())[1]) != tag:
                before.append(data)
            return before
    raise AssertionError("a no longer delivers gossip")


def control(**kw: Any) -> bytes:
    return rpc_pb2.RPC(control=rpc_pb2.ControlMessage(**kw)).SerializeToString()


def field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + encode_uvarint(len(payload)) + payload


def signed(x: Libp2pTransport, data: bytes, seqno: bytes, topics: list[str]) -> Any:
    msg = rpc_pb2.Message(
        from_id=host(x).get_id().to_bytes(), data=data, seqno=seqno, topicIDs=topics
    )
    payload = PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString()
    msg.signature = host(x).get_private_key().sign(payload)
    return msg


async def test_a_graft_for_a_topic_that_is_not_utf8_is_contained() -> None:
    """upb hands a non-UTF-8 topic id to py-libp2p as bytes; the router answered
    such a GRAFT with a PRUNE and raised UnicodeDecodeError setting its topic, in
    the read loop: the 9-byte RPC took the host down."""
    async with victim_honest_attacker() as (a, b, x, stream):
        await stream.send(field(0x1A, field(0x1A, field(0x0A, b"\xff\xfe"))))
        await processed(a, x, stream)
        await still_serves(a, b, b"after the bad topic")


async def test_many_messages_in_one_rpc_are_not_all_spawned() -> None:
    """Each message of an RPC became a task, and each spawn scanned every live task:
    3 000 unsigned messages in one 285 KB RPC cost ~2 s of event loop."""
    async with victim_honest_attacker() as (a, b, x, stream):
        ps, calls = pubsub(a), []
        push_msg = ps.push_msg

        async def counting(forwarder: Any, msg: Any) -> None:
            calls.append(forwarder)
            await push_msg(forwarder, msg)

        ps.push_msg = counting
        msgs = [rpc_pb2.Message(topicIDs=[TOPIC], seqno=i.to_bytes(8, "big")) for i in range(3000)]
        await stream.send(rpc_pb2.RPC(publish=msgs).SerializeToString())
        await processed(a, x, stream)
        assert calls.count(host(x).get_id()) <= MAX_MESSAGES_PER_RPC
        await still_serves(a, b, b"after the flood")


async def cached_and_spied(
    a: Libp2pTransport, b: Libp2pTransport, x: Libp2pTransport
) -> tuple[bytes, list[int]]:
    """b publishes a 100 KB message; once a caches it, returns its id and a list
    that gets the number of messages of each RPC a sends x."""
    await b.publish(b"z" * 100_000)
    mid: bytes = host(b).get_id().to_bytes() + pubsub(b).counter.to_bytes(8, "big")
    router = pubsub(a).router
    while router.mcache.get(mid) is None:
        await trio.sleep(0.01)
    replied: list[int] = []
    send_rpc = router.send_rpc

    def spy(peer_id: Any, rpc: Any, priority: bool = False) -> None:
        if peer_id == host(x).get_id():
            replied.append(len(rpc.publish))
        send_rpc(peer_id, rpc, priority)

    router.send_rpc = spy
    return mid, replied


def hex_spellings(mid: bytes, n: int) -> list[bytes]:
    """n distinct ASCII-hex spellings of ``mid`` (case, spaces between bytes),
    each of which py-libp2p's IWANT handler reads as ``mid``."""
    pairs = [mid[j : j + 1].hex() for j in range(len(mid))]
    out = []
    for i in range(n):
        text = "".join(
            (" " if j and (i >> (j % 10)) & 1 else "")
            + (p.upper() if (i >> (10 + j % 10)) & 1 else p)
            for j, p in enumerate(pairs)
        )
        out.append(text.encode())
    assert len(set(out)) == n and all(bytes.fromhex(v.decode()) == mid for v in out)
    return out


async def test_an_iwant_repeating_one_id_is_answered_once() -> None:
    """IWANT with 2 000 copies of a cached 100 KB message's id built a 200 MB reply."""
    async with victim_honest_attacker() as (a, b, x, stream):
        mid, replied = await cached_and_spied(a, b, x)
        await stream.send(control(iwant=[rpc_pb2.ControlIWant(messageIDs=[mid] * 2000)]))
        await processed(a, x, stream)
        assert sum(replied) == 1


async def test_an_iwant_spelling_one_id_in_hex_many_ways_is_answered_once() -> None:
    """py-libp2p reads an ASCII-hex IWANT id as hex (any case, spaces between
    bytes): 2 000 spellings of one cached 100 KB message's id, distinct as bytes,
    built a 191 MiB reply (max RSS 91 -> 987 MiB)."""
    async with victim_honest_attacker() as (a, b, x, stream):
        mid, replied = await cached_and_spied(a, b, x)
        ids = [mid, *hex_spellings(mid, 20)]
        await stream.send(control(iwant=[rpc_pb2.ControlIWant(messageIDs=ids)]))
        await processed(a, x, stream)
        assert sum(replied) == 1
        await still_serves(a, b, b"after the spellings")


def test_ihave_and_iwant_ids_are_forwarded_as_py_libp2p_reads_them() -> None:
    """Spellings of one id collapse to the id itself; ids py-libp2p cannot read
    (hex digits of odd length) are dropped; an id that reads as itself passes."""
    mid = bytes([0x00, 0x24, 0x08, 0x01]) + os.urandom(36)
    ids = [*hex_spellings(mid, 50), mid, b"abc", b"ABCDEF0", b"opaque id"]
    rpc = rpc_pb2.RPC(
        control=rpc_pb2.ControlMessage(
            ihave=[rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=ids)],
            iwant=[rpc_pb2.ControlIWant(messageIDs=ids)],
        )
    )
    trim_rpc(rpc, {TOPIC})
    assert [list(e.messageIDs) for e in rpc.control.ihave] == [[mid, b"opaque id"]]
    assert [list(e.messageIDs) for e in rpc.control.iwant] == [[mid, b"opaque id"]]


def test_an_id_that_reads_as_other_bytes_is_forwarded_so_it_reads_the_same() -> None:
    """b"3030" reads as b"00", which py-libp2p would read again as b"\\x00": what
    is forwarded must read as what the peer's id read as."""
    rpc = rpc_pb2.RPC(
        control=rpc_pb2.ControlMessage(iwant=[rpc_pb2.ControlIWant(messageIDs=[b"3030", b"30 30"])])
    )
    trim_rpc(rpc, {TOPIC})
    assert [safe_bytes_from_hex(m) for m in rpc.control.iwant[0].messageIDs] == [b"00"]


async def test_control_for_foreign_topics_leaves_no_state() -> None:
    """PRUNE backoffs per topic were never forgotten (even after the peer left) and
    the scorer kept four counters per (peer, topic), all decayed every heartbeat."""
    async with victim_honest_attacker() as (a, b, x, stream):
        for r in range(3):
            topics = [f"{r}-{i}-" + "t" * 40 for i in range(2000)]
            await stream.send(control(prune=[rpc_pb2.ControlPrune(topicID=t) for t in topics]))
            await stream.send(control(graft=[rpc_pb2.ControlGraft(topicID=t) for t in topics]))
            ihave = [rpc_pb2.ControlIHave(topicID=t, messageIDs=[b"m" * 20]) for t in topics]
            await stream.send(control(ihave=ihave))
        many = signed(x, b"ok", os.urandom(8), [TOPIC] + [f"t{i}" for i in range(5000)])
        await stream.send(rpc_pb2.RPC(publish=[many]).SerializeToString())
        await processed(a, x, stream)
        await still_serves(a, b, b"after the topics")
        router = pubsub(a).router
        scorer = router.scorer
        counters = (
            scorer.time_in_mesh,
            scorer.first_message_deliveries,
            scorer.mesh_message_deliveries,
            scorer.invalid_messages,
        )
        topics_held = {t for d in counters for per_peer in d.values() for t in per_peer}
        topics_held |= set(router.back_off) | set(
            router.ihave_message_limits.get(host(x).get_id(), {})
        )
        assert topics_held <= {TOPIC}


async def test_peer_exchange_in_a_prune_is_ignored() -> None:
    """A PRUNE's PX made the node dial addresses of the sender's choosing (signed
    records for throwaway keys) and keep those records in its peerstore."""
    async with victim_honest_attacker() as (a, _b, x, stream):
        dialed: list[Any] = []
        real_connect = host(a).connect

        async def spy(info: Any) -> None:
            dialed.append(info)
            await real_connect(info)

        host(a).connect = spy
        peers, ids = [], []
        for i in range(4):
            kp = create_new_key_pair()
            pid = ID.from_pubkey(kp.public_key)
            record = PeerRecord(pid, [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{9 + i}")])
            envelope = seal_record(record, kp.private_key)
            peers.append(
                rpc_pb2.PeerInfo(
                    peerID=pid.to_bytes(), signedPeerRecord=envelope.marshal_envelope()
                )
            )
            ids.append(pid)
        await stream.send(control(prune=[rpc_pb2.ControlPrune(topicID=TOPIC, peers=peers)]))
        await processed(a, x, stream)
        assert dialed == []
        assert not set(ids) & set(host(a).get_peerstore().peer_ids())


async def test_a_message_id_of_any_size_is_refused() -> None:
    """The message id is sender + seqno, and the seqno could be of any size: 40
    messages with 200 KB seqnos held 7.6 MB in the seen and validation caches."""
    async with victim_honest_attacker() as (a, b, x, stream):
        for _ in range(5):
            msg = signed(x, b"big id", os.urandom(200_000), [TOPIC])
            await stream.send(rpc_pb2.RPC(publish=[msg]).SerializeToString())
        await processed(a, x, stream)
        await still_serves(a, b, b"after the big ids")
        ps = pubsub(a)
        assert max(map(len, ps.seen_messages.cache), default=0) < 100
        assert max(map(len, ps.validation_cache.cache), default=0) < 100


async def test_a_reused_message_id_does_not_skip_the_validator() -> None:
    """py-libp2p caches validation results by message id (sender + seqno) for 300 s
    but forgets seen ids after 120 s: a peer could then resend its own id with other
    data, signed, and it was delivered and forwarded without our validator running.
    (Both times are simulated: the seen cache emptied, the results aged 130 s.)"""
    async with victim_honest_attacker(lambda data: data != b"evil") as (a, b, x, stream):
        seqno = os.urandom(8)
        await stream.send(
            rpc_pb2.RPC(publish=[signed(x, b"good", seqno, [TOPIC])]).SerializeToString()
        )
        assert (await a.messages().receive())[1] == b"good"
        ps = pubsub(a)
        ps.seen_messages.cache.clear()
        cache = ps.validation_cache.cache
        for key, result in list(cache.items()):
            cache[key] = result._replace(timestamp=result.timestamp - 130)
        await stream.send(
            rpc_pb2.RPC(publish=[signed(x, b"evil", seqno, [TOPIC])]).SerializeToString()
        )
        await processed(a, x, stream)
        assert b"evil" not in await still_serves(a, b, b"after the reused id")


async def test_an_iwant_for_many_messages_is_answered_in_rpcs_our_guard_keeps_whole() -> None:
    """py-libp2p answers an IWANT with one RPC holding every message asked for, and
    a peer's inbound guard keeps only the first 128 of an RPC: an honest IWANT of
    300 cached messages lost 172 of them. The reply now comes in parts of <= 128."""
    async with victim_honest_attacker() as (a, b, x, stream):
        router = pubsub(a).router
        msgs = [signed(b, b"m%d" % i, (10**6 + i).to_bytes(8, "big"), [TOPIC]) for i in range(300)]
        for msg in msgs:
            router.mcache.put(msg)
        queue = pubsub(a).peer_queues[host(x).get_id()]
        pushed: list[list[bytes]] = []
        push = queue.push

        def spy(rpc: Any, priority: bool = False) -> bool:
            pushed.append([m.seqno for m in rpc.publish])
            return bool(push(rpc, priority))

        queue.push = spy
        ids = [m.from_id + m.seqno for m in msgs]
        await stream.send(control(iwant=[rpc_pb2.ControlIWant(messageIDs=ids)]))
        await processed(a, x, stream)
        sizes = [len(p) for p in pushed if p]
        assert sizes and max(sizes) <= MAX_MESSAGES_PER_RPC
        got = [s for p in pushed for s in p]
        assert set(got) >= {m.seqno for m in msgs}
        for part in pushed:  # and x's guard keeps each part whole
            rpc = rpc_pb2.RPC(publish=[m for m in msgs if m.seqno in set(part)])
            trim_rpc(rpc, {TOPIC})
            assert len(rpc.publish) == len(set(part))


def test_split_publish_keeps_order_control_and_sender_record() -> None:
    msgs = [rpc_pb2.Message(topicIDs=[TOPIC], seqno=i.to_bytes(8, "big")) for i in range(300)]
    graft = rpc_pb2.ControlMessage(graft=[rpc_pb2.ControlGraft(topicID=TOPIC)])
    rpc = rpc_pb2.RPC(publish=msgs, control=graft, senderRecord=b"record")
    parts = split_publish(rpc, MAX_MESSAGES_PER_RPC)
    assert [len(p.publish) for p in parts] == [128, 128, 44]
    assert [m for p in parts for m in p.publish] == msgs
    assert parts[0].control == graft and not any(p.HasField("control") for p in parts[1:])
    assert all(p.senderRecord == b"record" for p in parts)
    small = rpc_pb2.RPC(publish=msgs[:3])
    assert split_publish(small, MAX_MESSAGES_PER_RPC) == [small]
