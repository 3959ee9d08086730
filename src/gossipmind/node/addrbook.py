"""The addresses a node learned of other peers (peer exchange, docs/sync.md §4).

Peers tell each other up to 16 addresses per sync ``hello``; anyone can send
any addresses, so the book is bounded: at most ``MAX_ADDRS_PER_PEER`` per peer
and ``max_peers`` peers, the least recently learned evicted first, and an
address that failed to dial is forgotten (a peer that shares it again brings
it back).
"""

from __future__ import annotations

MAX_ADDRS_PER_PEER = 4
MAX_PEERS = 1024


class AddressBook:
    def __init__(self, me: str, max_peers: int = MAX_PEERS) -> None:
        self._me = me
        self._max = max_peers
        self._addrs: dict[str, list[str]] = {}  # peer -> addrs, least recent first

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
        del addrs[:-MAX_ADDRS_PER_PEER]
        while len(self._addrs) > self._max:
            del self._addrs[next(iter(self._addrs))]

    def forget(self, addr: str) -> None:
        """``addr`` failed to dial: drop it (and its peer, if it was the last)."""
        peer = addr.rsplit("/p2p/", 1)[-1]
        addrs = self._addrs.get(peer)
        if addrs is not None and addr in addrs:
            addrs.remove(addr)
            if not addrs:
                del self._addrs[peer]

    def candidates(self, skip: set[str]) -> list[str]:
        """One address per peer to dial: not in ``skip``, and only peers whose id
        sorts after ours — of two nodes that learned of each other only the smaller
        id dials (two simultaneous dials leave py-libp2p a duplicate connection)."""
        return [
            addrs[-1] for peer, addrs in self._addrs.items() if peer not in skip and self._me < peer
        ]
