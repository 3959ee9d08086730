"""The addresses a node learned of other peers (peer exchange, docs/sync.md §4).

Peers tell each other up to 16 addresses per sync ``hello``; anyone can send
any addresses, so the book is bounded: at most ``MAX_ADDRS_PER_PEER`` per peer
and ``max_peers`` peers, the least recently learned evicted first. An address
that fails to dial is not offered again until a backoff has passed (5 s,
doubling per consecutive failure, at most 10 min), and is forgotten after
``MAX_DIAL_FAILURES`` failures in a row (~40 min; a peer that shares it again
brings it back). Forgetting at the first failure lost the other side of a
network partition for good: while the cut lasts every dial across it fails.
"""

from __future__ import annotations

MAX_ADDRS_PER_PEER = 4
MAX_PEERS = 1024
DIAL_BACKOFF_FIRST = 5.0  # seconds before an address that failed once is offered again
DIAL_BACKOFF_CAP = 600.0
MAX_DIAL_FAILURES = 10  # consecutive: then the address is forgotten


class AddressBook:
    def __init__(self, me: str, max_peers: int = MAX_PEERS) -> None:
        self._me = me
        self._max = max_peers
        self._addrs: dict[str, list[str]] = {}  # peer -> addrs, least recent first
        self._fails: dict[str, tuple[int, float]] = {}  # addr -> (failures in a row, not before)

    def __len__(self) -> int:
        return len(self._addrs)

    def __contains__(self, peer: object) -> bool:
        return peer in self._addrs

    def addrs(self, peer: str) -> list[str]:
        return list(self._addrs.get(peer, ()))

    def remember(self, peer: str, addr: str) -> None:
        """Note ``addr`` (which must end in ``/p2p/<peer>``) for ``peer``."""
        if peer == self._me or not addr.endswith("/p2p/" + peer):
            return
        addrs = self._addrs.pop(peer, [])
        self._addrs[peer] = addrs  # now the most recently learned
        if addr in addrs:
            addrs.remove(addr)
        addrs.append(addr)
        for old in addrs[:-MAX_ADDRS_PER_PEER]:
            self._fails.pop(old, None)
        del addrs[:-MAX_ADDRS_PER_PEER]
        while len(self._addrs) > self._max:
            for old in self._addrs.pop(next(iter(self._addrs))):
                self._fails.pop(old, None)

    def forget(self, addr: str) -> None:
        """Drop ``addr`` (and its peer, if it was the last)."""
        peer = addr.rsplit("/p2p/", 1)[-1]
        addrs = self._addrs.get(peer)
        self._fails.pop(addr, None)
        if addrs is not None and addr in addrs:
            addrs.remove(addr)
            if not addrs:
                del self._addrs[peer]

    def failed(self, addr: str, now: float) -> None:
        """A dial of ``addr`` failed at ``now``: back off, or forget it after
        ``MAX_DIAL_FAILURES`` in a row. Addresses not in the book (bootstrap
        addresses) are not tracked."""
        if addr not in self._addrs.get(addr.rsplit("/p2p/", 1)[-1], ()):
            return
        count = self._fails.get(addr, (0, 0.0))[0] + 1
        if count >= MAX_DIAL_FAILURES:
            self.forget(addr)
            return
        wait = min(DIAL_BACKOFF_FIRST * 2 ** (count - 1), DIAL_BACKOFF_CAP)
        self._fails[addr] = (count, now + wait)

    def succeeded(self, addr: str) -> None:
        """A dial of ``addr`` succeeded: its failures are forgiven."""
        self._fails.pop(addr, None)

    def candidates(self, skip: set[str], now: float) -> list[str]:
        """One address per peer to dial at ``now``: the most recently learned one not
        backing off; not for peers in ``skip``, and only for peers whose id sorts
        after ours — of two nodes that learned of each other only the smaller id
        dials (two simultaneous dials leave py-libp2p a duplicate connection)."""
        out = []
        for peer, addrs in self._addrs.items():
            if peer in skip or not self._me < peer:
                continue
            ready = [a for a in addrs if self._fails.get(a, (0, 0.0))[1] <= now]
            if ready:
                out.append(ready[-1])
        return out
