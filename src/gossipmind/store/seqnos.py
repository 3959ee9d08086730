"""The gossip ``seqno`` reservation: message ids a node has used stay used.

A gossip message's id is its sender's peer id and its ``seqno`` (docs/sync.md
§2), and receivers keep each id's digest for 240 s: a node that sends other
data under an id it used before has its messages dropped as repeats, or
refused as equivocation. The counter starts at the Unix time in nanoseconds,
which keeps a restarted node ahead of the ids it used, unless the clock
stepped back meanwhile (a bad RTC corrected by NTP, a VM restored from a
snapshot). So before its transport starts, a node reserves a span of seqnos
here, durably: it starts at ``max(now, end of the last reservation)`` and
records the end of this one, ``start + SPAN``. A node publishes far fewer
than :data:`SPAN` messages in one run (2^40: 35 years at 1 000 messages a
second), so the next run, whatever its clock says, starts past every id
this one can use. The cost is one small write per start.

The row is ``meta['seqno']``: 8 bytes, a big-endian unsigned integer. A
damaged one is replaced (it is only a floor; the clock is the fallback) with a
warning, and ``gossipmind doctor`` reports it.
"""

from __future__ import annotations

import logging
import sqlite3

from gossipmind.core.errors import StoreError
from gossipmind.store import sqlfile
from gossipmind.store.sqlite import Store, transaction

log = logging.getLogger("gossipmind.store")

SPAN = 1 << 40
"""Seqnos reserved per start."""
LIMIT = (1 << 64) - 1
"""Seqnos are 8 bytes (net/rpcguard.py: longer ones are refused)."""
KEY = "seqno"


def reserve_seqnos(store: Store, now_ns: int, span: int = SPAN) -> int:
    """Reserve ``span`` seqnos and return the first: ``max(now_ns, the last
    reservation's end)``. Durable when it returns (the store's synchronous
    setting: FULL by default)."""
    conn = store.conn
    try:
        with transaction(conn):
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (KEY,)).fetchone()
            floor = 0
            if row is not None:
                value = row[0]
                if isinstance(value, bytes) and len(value) == 8:
                    floor = int.from_bytes(value, "big")
                else:
                    log.warning(
                        "%s: the seqno reservation in the metadata is damaged (%r); "
                        "replacing it, from the clock",
                        store.path,
                        value if not isinstance(value, bytes) else value[:16],
                    )
            start = max(now_ns, floor)
            end = start + span
            if end > LIMIT:  # ~15 million restarts a span apart, or a clock in the 2500s
                raise StoreError(
                    f"{store.path}: the gossip seqno space is exhausted "
                    f"(reserved up to {floor}); this node needs a new key"
                )
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (KEY, end.to_bytes(8, "big")))
    except sqlite3.Error as exc:
        raise sqlfile.store_error(store.path, exc, "write") from exc
    return start
