"""The node's pattern for a failure the SDK reduced to another one.

The SDK computes a failure's pattern itself, to find its fix in the cache; the
node computes it again from the report, and counts, learns and names fixes under
its own. Both run the same reduction when SDK and node are of one release (and
the client has no ``rules=`` of its own: the node classifies without them); a
release that changes redaction (docs/operations.md §10) gives some failures
another id on each side, and an agent whose SDK and node differ never found the
fixes learned from its own reports. The node answers each report with its
pattern: :class:`Aliases` keeps it wherever it differs, and the client looks a
fix up under it too, from the first report of that failure the node took.
"""

from __future__ import annotations

import logging
from typing import Any

from gossipmind.core.errors import GossipmindError
from gossipmind.learn.patterns import Failure, reduce
from gossipmind.learn.taxonomy import Rule

log = logging.getLogger("gossipmind.sdk")

MAX_ALIASES = 1024  # patterns whose node id differs; past it the map starts over


class Aliases:
    """Our pattern -> the node's, where they differ. Written by whichever thread sent
    a report, read by any: one dict operation at a time (atomic), no lock (a fork
    could copy a held one into the child)."""

    def __init__(self, limit: int = MAX_ALIASES) -> None:
        self._map: dict[bytes, bytes] = {}
        self._limit = limit
        self.warned = False

    def learn(self, path: str, body: dict[str, Any], answer: Any, rules: tuple[Rule, ...]) -> None:
        """Note the node's pattern for a report (``body`` POSTed to ``path``, the node's
        ``answer``); requests other than failure reports are left alone."""
        if path != "/v1/failures":
            return
        node = answer.get("pattern") if isinstance(answer, dict) else None
        try:
            theirs = bytes.fromhex(node) if isinstance(node, str) else b""
            fields = {k: v for k, v in body.items() if k != "id"}  # (the report's own id)
            ours = reduce(Failure(**fields), rules).pattern
        except (ValueError, TypeError, GossipmindError):  # not an answer to a report of ours
            return
        if len(theirs) != 32 or theirs == ours:
            return
        if len(self._map) >= self._limit and ours not in self._map:
            self._map.clear()  # rare: learned again from the next reports
        self._map[ours] = theirs
        if not self.warned:
            self.warned = True
            log.warning(
                "gossipmind: the node reduces a failure of %s/%s to another pattern than "
                "this SDK (%s, not %s): SDK and node of different releases (or the "
                "client's own rules=); fixes are looked up under the node's pattern too "
                "(docs/operations.md §10)",
                body.get("service"),
                body.get("operation"),
                theirs.hex()[:12],
                ours.hex()[:12],
            )

    def get(self, pattern: bytes) -> bytes:
        """The node's pattern for ``pattern`` (``pattern`` itself unless it differs)."""
        return self._map.get(pattern, pattern)
