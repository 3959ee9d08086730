"""Signed peer records (pubsub ``senderRecord``) are neither read nor sent: nothing
of ours uses a certified address book, and each record cost an Ed25519 verify per
inbound RPC and a listing of the host's addresses per outbound one (see
gossipmind.net.rpcguard and gossipmind.net.pubsub)."""

from __future__ import annotations

import os
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.peer.envelope import seal_record
from libp2p.peer.peer_record import PeerRecord
from libp2p.pubsub.pb import rpc_pb2
from test_net_hostile_rpc import TOPIC, cfg, host, processed, signed, victim_honest_attacker

from gossipmind.net import rpcguard
from gossipmind.net.host import open_libp2p_transport
from gossipmind.net.pubsub import _PubsubHost
from gossipmind.net.rpcguard import trim_rpc


def test_trimming_drops_the_sender_record() -> None:
    rpc = rpc_pb2.RPC(
        subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=TOPIC)],
        senderRecord=b"a record",
    )
    trim_rpc(rpc, {TOPIC})
    assert not rpc.HasField("senderRecord")
    assert [s.topicid for s in rpc.subscriptions] == [TOPIC]  # the rest is kept


async def test_a_valid_sender_record_is_not_stored() -> None:
    """A peer's signed record (for addresses of its choosing) went into the
    victim's certified address book (replacing the one identify gave); it is now
    dropped unread, and the RPC's message is delivered as usual."""
    async with victim_honest_attacker() as (a, _b, x, stream):
        xid = host(x).get_id()
        record = PeerRecord(xid, [multiaddr.Multiaddr("/ip4/127.0.0.9/tcp/9")])
        envelope = seal_record(record, host(x).get_private_key())
        msg = signed(x, b"with a record", os.urandom(8), [TOPIC])
        rpc = rpc_pb2.RPC(publish=[msg], senderRecord=envelope.marshal_envelope())
        await stream.send(rpc.SerializeToString())
        with trio.fail_after(10):
            assert (await a.messages().receive())[1] == b"with a record"
        await processed(a, x, stream)
        stored = host(a).get_peerstore().get_peer_record(xid)  # from identify, if any
        forged = multiaddr.Multiaddr("/ip4/127.0.0.9/tcp/9")
        assert stored is None or forged not in stored.record().addrs
        assert forged not in host(a).get_peerstore().addrs(xid)


async def test_a_garbage_sender_record_does_not_drop_the_rpc() -> None:
    """py-libp2p ignored a whole RPC whose record did not parse; the record is
    not ours to judge, and the message in the RPC is judged by our validator."""
    async with victim_honest_attacker() as (a, _b, x, stream):
        msg = signed(x, b"with junk", os.urandom(8), [TOPIC])
        rpc = rpc_pb2.RPC(publish=[msg], senderRecord=os.urandom(200))
        await stream.send(rpc.SerializeToString())
        with trio.fail_after(10):
            assert (await a.messages().receive())[1] == b"with junk"


async def test_published_rpcs_carry_no_sender_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """What one real node sends another: the RPCs carrying gossip have no record."""
    seen: list[tuple[bool, bool]] = []  # (has a record, carries messages), as received
    real_trim = rpcguard.trim_rpc

    def spy(rpc: Any, topics: Any) -> None:
        seen.append((rpc.HasField("senderRecord"), len(rpc.publish) > 0))
        real_trim(rpc, topics)

    monkeypatch.setattr(rpcguard, "trim_rpc", spy)
    with trio.fail_after(60):
        async with (
            open_libp2p_transport(cfg(), lambda _d: True) as a,
            open_libp2p_transport(cfg(), lambda _d: True) as b,
        ):
            await a.connect(b.addrs()[0])
            for i in range(100):  # the mesh forms at a heartbeat: publish until delivered
                await a.publish(b"gossip %d" % i)
                with trio.move_on_after(0.1):
                    await b.messages().receive()
                    break
            else:
                raise AssertionError("b never received a's gossip")
    carrying = [has_record for has_record, publish in seen if publish]
    assert carrying, "no RPC with messages was read"
    assert not any(carrying)


def test_the_pubsub_host_reads_addresses_at_most_once_a_second() -> None:
    class Host:
        calls = 0

        def get_addrs(self) -> list[str]:
            Host.calls += 1
            return [f"/ip4/127.0.0.1/tcp/{Host.calls}"]

        def get_id(self) -> str:
            return "the host"

    seen = _PubsubHost(Host())
    assert seen.get_id() == "the host"  # everything else is the host's own
    first = [seen.get_addrs() for _ in range(50)]
    assert Host.calls == 1 and all(addrs == first[0] for addrs in first)
    seen._read_at -= _PubsubHost.ADDRS_TTL  # a second later
    assert seen.get_addrs() == ["/ip4/127.0.0.1/tcp/2"]
