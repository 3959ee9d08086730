"""Peers found on another network (docs/operations.md §12).

A node given another network's genesis, or a bootstrap address of a node of
another network, connects over libp2p like any peer: the transport knows
nothing of networks. Only its sync ``hello`` tells, and the session is declined
(``wrong network``). Such a peer used to stay connected for good: counted in
``peers`` (so an alert on ``gossipmind_peers == 0`` never fired), holding one
of the 12 connection slots, declining a session every round, with nothing said
above debug level.

Now the first such session logs a warning naming the peer, the node
disconnects it, and for :data:`HOLD` seconds refuses its connections and sync
streams and does not dial it. Its id is kept here, never in the address book.
Peer ids cost nothing to make: at most :data:`WARN_BURST` such warnings are
logged in any :data:`WARN_WINDOW` seconds, and the next one said counts those
that were not.
"""

from __future__ import annotations

import logging

from gossipmind.core.saying import Bounded

log = logging.getLogger("gossipmind.node")
HOLD = 600.0  # seconds a peer of another network is kept off after its last session
MAX_HELD = 1024  # peers held at once; the one held longest goes first
WARN_BURST = 5  # warnings about such peers at most in any WARN_WINDOW seconds
WARN_WINDOW = 60.0


class ForeignPeers:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self.found = 0  # peers found on another network (a peer again after its hold: again)
        self._warnings = Bounded(
            log,
            burst=WARN_BURST,
            window=WARN_WINDOW,
            unsaid="{} more peers of another network were found and not said",
        )

    def holds(self, peer: str, now: float) -> bool:
        """Whether ``peer`` is kept off at ``now``."""
        until = self._until.get(peer)
        if until is None:
            return False
        if until <= now:
            del self._until[peer]
            return False
        return True

    def held(self, now: float) -> set[str]:
        """The peers kept off at ``now``."""
        for peer in [p for p, until in self._until.items() if until <= now]:
            del self._until[peer]
        return set(self._until)

    def add(self, peer: str, now: float) -> None:
        """``peer`` declined or was declined a session as being on another network
        at ``now``: keep it off for :data:`HOLD` seconds (from now), and warn the
        first time (again once a hold has run out)."""
        if not self.holds(peer, now):
            self.found += 1
            self._warnings.warning(
                now,
                "peer %s is on another network (a sync hello named another network "
                "id): disconnected, and not dialled or synced for %.0f min. Check that "
                "both nodes were given the same genesis file, and the bootstrap addresses",
                peer,
                HOLD / 60,
            )
        self._until.pop(peer, None)
        self._until[peer] = now + HOLD
        while len(self._until) > MAX_HELD:
            del self._until[next(iter(self._until))]
