"""Idle TCP connects cannot lock new peers out of a node (net/inbound.py).

Each accepted connection held one of py-libp2p's 256 inbound slots until its
upgrade timeout (10 s), and every connect past them was closed on accept: 256
idle sockets from one host, reopened as the node closed them, let 2 of 20 honest
dials through. Now the connections in their handshake are capped per remote IP,
and when all slots are taken a new connection closes the oldest one of the IP
holding the most. Real libp2p transports on 127.0.0.1; the idle sockets come
from other loopback addresses (127.0.0.2...), as an attacker's would come from
hosts of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import trio

from gossipmind.core.errors import NetworkError
from gossipmind.net import TransportConfig, host, inbound
from gossipmind.net.host import Libp2pTransport, open_libp2p_transport

TOPIC = "gossipmind/inbound-handshakes-test/ops/1"


def config() -> TransportConfig:
    return TransportConfig(seed=os.urandom(32), topic=TOPIC)


def port_of(node: Libp2pTransport) -> int:
    return int(node.addrs()[0].split("/tcp/")[1].split("/")[0])


async def closed_by_node(s: trio.SocketStream, within: float) -> bool:
    with trio.move_on_after(within):
        try:
            while True:  # multistream's greeting, then EOF once closed
                if await s.receive_some(4096) == b"":
                    return True
        except trio.BrokenResourceError:
            return True
    return False


def test_the_defaults_leave_room_for_a_loopback_testnet() -> None:
    # 40 nodes on 127.0.0.1 dialling one bootstrap node at once are one IP
    assert 40 <= inbound.HANDSHAKES_PER_IP < host.INBOUND_SLOTS
    assert (
        TransportConfig(seed=bytes(32), topic="t").dial_timeout >= inbound.INBOUND_UPGRADE_TIMEOUT
    )


async def test_idle_connects_from_one_ip_past_its_cap_are_closed_at_once() -> None:
    with trio.fail_after(60):
        async with open_libp2p_transport(config(), lambda _d: True) as node:
            port = port_of(node)
            idle = [
                await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
                for _ in range(100)
            ]
            closed: list[bool] = []

            async def check(s: trio.SocketStream) -> None:
                closed.append(await closed_by_node(s, 1.0))

            async with trio.open_nursery() as nursery:
                for s in idle:
                    nursery.start_soon(check, s)
            assert any(closed), "none of 100 idle sockets from one address was closed"
            per_ip = inbound.HANDSHAKES_PER_IP
            assert sum(closed) == 100 - per_ip, f"{sum(closed)} of 100 closed"
            guard = node.handshakes
            assert guard is not None
            assert guard.handshaking("127.0.0.2") == per_ip and guard.refused == 100 - per_ip
            async with open_libp2p_transport(config(), lambda _d: True) as peer:
                await peer.connect(node.addrs()[0])  # another IP still gets in
                assert node.peers() == [peer.peer_id]
            for s in idle:
                await s.aclose()
            for _ in range(200):  # the node notices the closes
                if guard.handshaking() == 0:
                    break
                await trio.sleep(0.05)
            assert guard.handshaking() == 0


@dataclass
class Flood:
    opened: int = 0
    closed_by_node: int = 0


async def hold_open(port: int, ip: str, flood: Flood) -> None:
    """An idle socket from ``ip``, reopened 0.2 s after the node closes it (the
    attacker, the node and the honest peers share one event loop here)."""
    while True:
        try:
            s = await trio.open_tcp_stream("127.0.0.1", port, local_address=ip)
        except OSError:
            await trio.sleep(0.05)
            continue
        flood.opened += 1
        async with s:
            try:
                while await s.receive_some(4096):
                    pass
            except trio.BrokenResourceError:
                pass
        flood.closed_by_node += 1
        await trio.sleep(0.2)


async def test_a_flood_of_idle_connects_from_several_hosts_does_not_lock_peers_out() -> None:
    """300 idle sockets from 6 addresses (50 each: under the per-IP cap) against
    256 slots, each reopened as soon as the node closes it: honest dials from
    another address all get in, and the flood only ever displaces itself."""
    ips = [f"127.0.0.{i}" for i in range(2, 8)]
    flood = Flood()
    with trio.fail_after(120):
        async with open_libp2p_transport(config(), lambda _d: True) as node:
            port = port_of(node)
            async with trio.open_nursery() as attack:
                for ip in ips:
                    for _ in range(50):
                        attack.start_soon(hold_open, port, ip, flood)
                for _ in range(400):  # every socket opened once: the slots are full
                    if flood.opened >= 300:
                        break
                    await trio.sleep(0.05)
                assert flood.opened >= 300
                await trio.sleep(0.5)
                ok, failed = 0, []
                for _ in range(5):
                    async with open_libp2p_transport(config(), lambda _d: True) as peer:
                        try:
                            with trio.fail_after(10):
                                await peer.connect(node.addrs()[0])
                            ok += 1
                        except (NetworkError, trio.TooSlowError) as exc:
                            failed.append(repr(exc))
                attack.cancel_scope.cancel()
            assert failed == [] and ok == 5, f"honest dials failed during the flood: {failed}"
            guard = node.handshakes
            assert guard is not None
            held = guard.handshaking()
            assert held <= host.INBOUND_SLOTS
            assert guard.shed > 0 and flood.closed_by_node > 0  # room was made
            assert all(guard.handshaking(ip) <= inbound.HANDSHAKES_PER_IP for ip in ips)
            # every connection shed was released in py-libp2p's resource manager
            # too: cancelled in its cleanup, a handshake leaked its count there,
            # and ~750 sheds later every inbound connection was denied
            swarm = node._host.get_network()
            for _ in range(400):
                if guard.handshaking() == 0 and swarm._resource_manager._current_connections == 0:
                    break
                await trio.sleep(0.05)
            assert guard.handshaking() == 0
            assert swarm._resource_manager._current_connections == 0
            async with open_libp2p_transport(config(), lambda _d: True) as peer:
                await peer.connect(node.addrs()[0])  # and the node still accepts


async def test_a_loopback_testnet_dialling_one_node_at_once_is_not_refused() -> None:
    """40 peers on 127.0.0.1 dial one node at the same moment: none is refused
    by the per-IP cap (the node keeps its connection limit of 12)."""
    peers = 40
    with trio.fail_after(120):
        async with open_libp2p_transport(config(), lambda _d: True) as node:
            outcomes: list[str] = []

            async def dial(ready: trio.Event) -> None:
                async with open_libp2p_transport(config(), lambda _d: True) as peer:
                    await ready.wait()
                    try:
                        await peer.connect(node.addrs()[0])
                        outcomes.append("ok")
                    except NetworkError as exc:
                        outcomes.append(repr(exc))
                    with trio.move_on_after(5):  # hold the connection until all dialled
                        while len(outcomes) < peers:
                            await trio.sleep(0.05)

            ready = trio.Event()
            async with trio.open_nursery() as nursery:
                for _ in range(peers):
                    nursery.start_soon(dial, ready)
                await trio.sleep(1.0)
                ready.set()
            guard = node.handshakes
            assert guard is not None
            assert guard.refused == 0 and guard.shed == 0
            assert outcomes.count("ok") >= node.config.connection_limit
