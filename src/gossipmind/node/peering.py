"""Keeping a node connected (docs/sync.md §4).

* **Maintain**: below ``min_peers`` connections, dial bootstrap addresses and
  addresses learned by peer exchange, every second (backing off to 5 s while
  the node has no peer at all).
* **Explore**: every ``explore_interval`` (jittered ±50 %), a node with fewer
  than ``max_peers`` connections dials one known address it is not connected
  to, at random, and syncs with that peer. Without it a node that had
  ``min_peers`` connections never dialled again, so two groups that each kept
  that many inside (a partition of a 10 + 10 testnet, a real network cut)
  stayed apart for good after the cut healed. A node's partition list being
  lifted (``Node.block``) explores at once.
* **Share**: the addresses a node tells its sync peers (``hello.peers``).

A bootstrap address may name its host by DNS (:mod:`gossipmind.node.resolve`),
or a list published in DNS (``/dnsaddr``, :mod:`gossipmind.node.dnsaddr`): each
dial resolves it again and tries what it resolves to, in turn.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from gossipmind.core.errors import NetworkError
from gossipmind.node import resolve
from gossipmind.node.addrbook import host_ip

if TYPE_CHECKING:
    from gossipmind.node.node import Node

log = logging.getLogger("gossipmind.node")
DIAL_TIMEOUT = 5.0
CONNECTION_CAP = 12  # the transport's hard cap: TransportConfig.degree_high's default (net §5)
SHARED_ADDRS = 16
TELL_EVERY = 300.0  # a bootstrap address that keeps failing is logged at most this often


def peer_of(addr: str) -> str:
    return addr.rsplit("/p2p/", 1)[-1]


class Peering:
    def __init__(self, node: Node) -> None:
        self._node = node
        self._wake = trio.Event()
        self.explored = 0  # exploration dials that connected
        self.resolver: resolve.Resolver | None = None  # None: the system's (tests set one)
        self._told: dict[str, float] = {}  # bootstrap address -> when its failure was logged

    def wake(self) -> None:
        """Explore now (a partition was lifted)."""
        self._wake.set()

    async def maintain(self) -> None:
        node, backoff = self._node, 0.2
        while True:
            peers = set(node.transport.peers())
            if len(peers) < min(node.config.min_peers, self.limit()):
                for addr in self.candidates(peers):
                    await self._dial(addr)
                    if len(node.transport.peers()) >= min(node.config.min_peers, self.limit()):
                        break
            connected = bool(node.transport.peers())
            backoff = 1.0 if connected else min(backoff * 2, 5.0)
            await trio.sleep(backoff)

    async def explore(self) -> None:
        node = self._node
        while True:
            with trio.move_on_after(node.config.explore_interval * (0.5 + node._rng.random())):
                await self._wake.wait()
            self._wake = trio.Event()
            peers = set(node.transport.peers())
            if len(peers) >= self.limit():
                continue
            choices = self.candidates(peers)  # any of them, bootstrap or learned: one
            if choices:  # dead bootstrap address must not take every exploration
                addr = node._rng.choice(choices)
                if await self._dial(addr):
                    self.explored += 1
                    node.start_sync(peer_of(addr))

    def limit(self) -> int:
        """Connections worth dialling for: ``max_peers``, at most the transport's cap
        (a dial past it fails here, and must not count against the address)."""
        return min(self._node.config.max_peers, CONNECTION_CAP)

    async def _dial(self, addr: str) -> bool:
        node = self._node
        if len(node.transport.peers()) >= self.limit():
            return False  # full here: nothing to say about the address
        try:
            targets = await resolve.resolve(addr, self.resolver)
        except Exception as exc:  # noqa: BLE001 - NetworkError, or a resolver's surprise
            self._failed(addr, str(exc))
            return False
        # the addresses of one name share one dial's budget, twice an address's: a
        # name whose addresses do not answer holds up the other candidates no longer
        budget = DIAL_TIMEOUT * (2 if len(targets) > 1 else 1)
        why = f"no connection within {budget:g} s"
        with trio.move_on_after(budget):
            for target in targets:
                try:
                    with trio.fail_after(DIAL_TIMEOUT):
                        await node.transport.connect(target)
                except (NetworkError, trio.TooSlowError) as exc:
                    log.debug("dial %s failed: %s", target, exc)
                    why = f"dial failed: {exc or 'timed out'}"
                    continue
                node.addrbook.succeeded(addr)
                self._told.pop(addr, None)
                return True
        self._failed(addr, why)
        return False

    def _failed(self, addr: str, why: str) -> None:
        """Back off ``addr``; say why if it is a bootstrap address: at once the first
        time (and the first time after it connected), then at most every
        :data:`TELL_EVERY` seconds while it keeps failing; a warning while the node
        has no peer at all."""
        node, now = self._node, trio.current_time()
        node.addrbook.failed(addr, now)
        if addr not in node.config.bootstrap:
            return  # learned by peer exchange: peers come and go
        last = self._told.get(addr)
        if last is not None and now - last < TELL_EVERY:
            return
        self._told[addr] = now
        level = logging.INFO if node.transport.peers() else logging.WARNING
        log.log(level, "bootstrap address %s: %s (tried again, backing off)", addr, why)

    def candidates(self, connected: set[str]) -> list[str]:
        """Addresses to dial, bootstrap peers first (each list shuffled), then peers
        learned by peer exchange, none connected or blocked (partition): what peers
        tell us can never push the operator's bootstrap list out of a round."""
        node = self._node
        now = trio.current_time()
        skip = connected | node.blocked | node.foreign.held(now)
        ready = node.addrbook.ready
        boot = [a for a in node.config.bootstrap if peer_of(a) not in skip and ready(a, now)]
        learned = node.addrbook.candidates(skip, now)
        node._rng.shuffle(boot)
        node._rng.shuffle(learned)
        return (boot + learned)[: node.config.max_peers]

    def share_addrs(self) -> list[str]:
        """An address of each connected peer (at most ``SHARED_ADDRS``), one that
        others can reach: a peer's loopback address is shared only when it has
        no other (every node of a testnet on 127.0.0.1). Of those, one whose
        latest dial from here did not fail, the most recently stored: py-libp2p
        keeps the address of a failed dial (a peer's old port) before the one
        identify brought when the peer came back at another."""
        transport, book = self._node.transport, self._node.addrbook
        out: list[str] = []
        for peer in transport.peers():
            addrs = transport.peer_addrs(peer)
            usable = [a for a in addrs if not _local(a)] or addrs
            working = [a for a in usable if not book.failing(a)] or usable
            out.extend(working[-1:])
        return out[:SHARED_ADDRS]


def _local(addr: str) -> bool:
    """A loopback or unspecified address: reachable from this host only, if at all."""
    ip = host_ip(addr)
    return ip is not None and (ip.is_loopback or ip.is_unspecified)
