"""The addresses a node learned of other peers (peer exchange, docs/sync.md §4).

Peers tell each other up to 16 addresses per sync ``hello``, and anyone can
send any addresses, so the book trusts what it is told very little:

* **Bounded**: at most ``MAX_ADDRS_PER_PEER`` addresses per peer and
  ``max_peers`` peers, the least recently learned evicted first.
* **A quota per teacher**: one peer's hellos hold at most
  ``MAX_TAUGHT_PER_PEER`` entries (its newest replace its oldest), so no peer
  can fill the book: one connected peer used to replace all 1 024 entries in
  ~64 sessions.
* **First-hand wins**: addresses a peer's own connection showed are not
  displaced by what others say about that peer while one of them works; once
  each has failed its latest dial (the peer moved to another port or IP),
  peer exchange is heard again, so a moved peer is found at its new address.
* **One peer per endpoint** among second-hand entries: a host:port already in
  the book under another peer id is not learned again, so the book cannot be
  made to dial one third party under 1 000 invented ids.
* **Dialable only**: ``/ip4|ip6/<host>/tcp/<port>/p2p/<id>`` with a host that
  can be a peer (loopback and private hosts are fine: testnets and LANs; the
  unspecified, multicast, broadcast, link-local and reserved ones are not),
  or the in-memory fake network's ``/memory/<id>/p2p/<id>``.
* **Failed dials back off**: an address that fails is not offered again for
  5 s, doubling per consecutive failure up to 10 min, and is forgotten after
  ``MAX_DIAL_FAILURES`` failures in a row (at least ~31 min; a peer that shares it again
  brings it back). Forgetting at the first failure lost the other side of a
  network partition for good: while the cut lasts every dial across it fails.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

MAX_ADDRS_PER_PEER = 4
MAX_PEERS = 1024
MAX_TAUGHT_PER_PEER = 16  # one hello's worth
MAX_ADDR_LEN = 256
DIAL_BACKOFF_FIRST = 5.0  # seconds before an address that failed once is offered again
DIAL_BACKOFF_CAP = 600.0
BOOTSTRAP_BACKOFF_CAP = 10.0  # a bootstrap address: 1 s doubling to this, never forgotten
MAX_DIAL_FAILURES = 10  # consecutive: then the address is forgotten


def host_ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The host of an ``/ip4|ip6/<host>/…`` address (of the family it names), or None."""
    parts = addr.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] not in ("ip4", "ip6"):
        return None
    try:
        ip = ipaddress.ip_address(parts[2])
    except ValueError:
        return None
    return ip if (ip.version == 4) == (parts[1] == "ip4") else None


def dialable(addr: str, peer: str) -> bool:
    """Whether ``addr`` is an address a node may dial to reach ``peer``."""
    if len(addr) > MAX_ADDR_LEN or not peer or "/" in peer:
        return False
    parts = addr.split("/")
    if parts[-2:] != ["p2p", peer]:
        return False
    if parts[:2] == ["", "memory"] and len(parts) == 5:
        return parts[2] == peer
    if len(parts) != 7 or parts[0] != "" or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp":
        return False
    port = parts[4]
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return False
    ip = host_ip(addr)
    if ip is None:
        return False
    if ip.is_loopback:
        return True  # (::1 sits in a reserved IPv6 block)
    return not (ip.is_unspecified or ip.is_multicast or ip.is_link_local or ip.is_reserved)


def _endpoint(addr: str) -> str:
    return addr.rsplit("/p2p/", 1)[0]


@dataclass
class _Entry:
    addrs: list[str] = field(default_factory=list)  # least recently learned first
    first_hand: bool = False  # learned from the peer's own connection
    teachers: set[str] = field(default_factory=set)  # peers whose hellos named it


class AddressBook:
    def __init__(self, me: str, max_peers: int = MAX_PEERS) -> None:
        self._me = me
        self._max = max_peers
        self._peers: dict[str, _Entry] = {}  # least recently learned first
        self._taught: dict[str, dict[str, None]] = {}  # teacher -> peers it named, oldest first
        self._endpoints: dict[str, str] = {}  # host:port part -> the peer it is booked under
        self._fails: dict[str, tuple[int, float]] = {}  # addr -> (failures in a row, not before)
        self._boot: set[str] = set()  # addresses outside the book with failures (bootstrap)

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer: object) -> bool:
        return peer in self._peers

    def addrs(self, peer: str) -> list[str]:
        entry = self._peers.get(peer)
        return list(entry.addrs) if entry is not None else []

    def taught_by(self, teacher: str) -> int:
        """How many entries ``teacher``'s hellos hold."""
        return len(self._taught.get(teacher, ()))

    def remember(self, peer: str, addr: str, teacher: str | None = None) -> None:
        """Note ``addr`` (which must be a dialable address ending in ``/p2p/<peer>``)
        for ``peer``: first-hand (from the peer's own connection) when ``teacher``
        is None, else named by ``teacher`` in peer exchange."""
        if peer in (self._me, teacher) or not dialable(addr, peer):
            return
        entry = self._peers.get(peer)
        owner = self._endpoints.get(_endpoint(addr))
        if teacher is not None:
            if entry is not None and entry.first_hand and not self._all_failing(entry):
                return  # what the peer's own connection showed stands, while it works
            if owner is not None and owner != peer:
                return  # one peer per endpoint among what others tell us
        elif owner is not None and owner != peer:
            other = self._peers.get(owner)
            if other is not None and other.first_hand:
                return  # what a peer says of itself never takes another's endpoint
            self._drop_addr(owner, f"{_endpoint(addr)}/p2p/{owner}")  # hearsay gives way
        if entry is None:
            entry = _Entry()
        else:
            del self._peers[peer]
        self._peers[peer] = entry  # now the most recently learned
        if teacher is None and not entry.first_hand:
            for old in entry.addrs:  # second-hand addresses give way
                self._unindex(old)
            entry.addrs.clear()
            entry.first_hand = True
        if addr in entry.addrs:
            entry.addrs.remove(addr)
        else:  # new to the book: a clean slate, whatever it did as a bootstrap address
            self._fails.pop(addr, None)
            self._boot.discard(addr)
        entry.addrs.append(addr)
        self._endpoints[_endpoint(addr)] = peer
        for old in entry.addrs[:-MAX_ADDRS_PER_PEER]:
            self._unindex(old)
        del entry.addrs[:-MAX_ADDRS_PER_PEER]
        if teacher is not None:
            self._teach(teacher, peer, entry)
        while len(self._peers) > self._max:
            self._drop_peer(next(iter(self._peers)))

    def _all_failing(self, entry: _Entry) -> bool:
        """Whether every address of ``entry`` failed its latest dial: the peer may
        have moved (another port or IP), so what others say of it is heard again."""
        return all(a in self._fails for a in entry.addrs)

    def _teach(self, teacher: str, peer: str, entry: _Entry) -> None:
        taught = self._taught.setdefault(teacher, {})
        taught.pop(peer, None)
        taught[peer] = None
        entry.teachers.add(teacher)
        while len(taught) > MAX_TAUGHT_PER_PEER:
            oldest = next(iter(taught))
            del taught[oldest]
            old = self._peers.get(oldest)
            if old is not None:
                old.teachers.discard(teacher)
                if not old.teachers and not old.first_hand:
                    self._drop_peer(oldest)

    def _unindex(self, addr: str) -> None:
        self._fails.pop(addr, None)
        ep = _endpoint(addr)
        if self._endpoints.get(ep) == addr.rsplit("/p2p/", 1)[-1]:
            del self._endpoints[ep]

    def _drop_addr(self, peer: str, addr: str) -> None:
        entry = self._peers.get(peer)
        if entry is None or addr not in entry.addrs:
            return
        entry.addrs.remove(addr)
        self._unindex(addr)
        if not entry.addrs:
            self._drop_peer(peer)

    def _drop_peer(self, peer: str) -> None:
        entry = self._peers.pop(peer)
        for addr in entry.addrs:
            self._unindex(addr)
        for teacher in entry.teachers:
            taught = self._taught.get(teacher)
            if taught is not None:
                taught.pop(peer, None)
                if not taught:
                    del self._taught[teacher]

    def forget(self, addr: str) -> None:
        """Drop ``addr`` (and its peer, if it was the last)."""
        self._drop_addr(addr.rsplit("/p2p/", 1)[-1], addr)
        self._fails.pop(addr, None)

    def failed(self, addr: str, now: float) -> None:
        """A dial of ``addr`` failed at ``now``: back off, or forget it after
        ``MAX_DIAL_FAILURES`` in a row. An address not in the book (a bootstrap
        address: the node dials only those and the book's) backs off too, at most
        ``BOOTSTRAP_BACKOFF_CAP``, and is never forgotten."""
        in_book = addr in self.addrs(addr.rsplit("/p2p/", 1)[-1])
        if not in_book and addr not in self._boot and len(self._boot) >= MAX_PEERS:
            return
        count = self._fails.get(addr, (0, 0.0))[0] + 1
        if in_book and count >= MAX_DIAL_FAILURES:
            self.forget(addr)
            return
        if in_book:
            wait = min(DIAL_BACKOFF_FIRST * 2 ** (count - 1), DIAL_BACKOFF_CAP)
        else:
            wait = min(2.0 ** (count - 1), BOOTSTRAP_BACKOFF_CAP)
        self._fails[addr] = (count, now + wait)
        if not in_book:
            self._boot.add(addr)

    def ready(self, addr: str, now: float) -> bool:
        """Whether ``addr`` is not backing off at ``now``."""
        return self._fails.get(addr, (0, 0.0))[1] <= now

    def failing(self, addr: str) -> bool:
        """Whether the latest dial of ``addr`` failed (backing off or not)."""
        return addr in self._fails

    def succeeded(self, addr: str) -> None:
        """A dial of ``addr`` succeeded: its failures are forgiven."""
        self._fails.pop(addr, None)
        self._boot.discard(addr)

    def candidates(self, skip: set[str], now: float) -> list[str]:
        """One address per peer to dial at ``now``: the most recently learned one not
        backing off; not for peers in ``skip``, and only for peers whose id sorts
        after ours — of two nodes that learned of each other only the smaller id
        dials (two simultaneous dials leave py-libp2p a duplicate connection)."""
        out = []
        for peer, entry in self._peers.items():
            if peer in skip or not self._me < peer:
                continue
            ready = [a for a in entry.addrs if self._fails.get(a, (0, 0.0))[1] <= now]
            if ready:
                out.append(ready[-1])
        return out
