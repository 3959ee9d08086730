"""The reporter of a node that starts: the reports a crash left, and its holds.

A node that opens its store counts again the journal rows a crash left unwritten
(``Reporter.recover``), then rebuilds the holds of its streams of reports
(learn/hold.py) from its own recent ``pattern.report`` and ``fix.outcome`` ops:
an op's ts is when its key was written (``Reporter.stamp``) and its window starts
at the stream's first report it carries, which is what the hold was told. So a
restart no longer starts every stream's doubling again (1, 2, 4, … windows: a few
more ops per pattern and per fix at each restart). The rebuilt holds decide only
when the reports are written, never whether: a journaled report is written all
the same.

Bounded: the ops read are the node's own, newest first by seq (never the whole
store), of the last ``3 * report_hold_max_ms`` (``Hold.replay`` says why that is
enough), at most ``MAX_OPS``. An op older than that, or beyond it, is not read: a
stream that it began looks younger, and is written an op sooner, as after a
restart before this. Written by an older binary, an op's ts was when it was
written, a few milliseconds after its window was closed: its hold ends as late.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from gossipmind.core import ops
from gossipmind.core.errors import GossipmindError
from gossipmind.learn.hold import Hold
from gossipmind.node.reporter import Reporter
from gossipmind.store import journal
from gossipmind.store.sqlite import Store

log = logging.getLogger("gossipmind.node.reporter")

KEYS = {"pattern.report": "pattern", "fix.outcome": "fix"}  # kind -> its body's key
MAX_OPS = 50_000  # own report ops read at a start, at most (~15 µs each)
Write = tuple[bytes, int, int]  # key, written (ms), first report (ms): Hold.written's


def start_reports(reporter: Reporter, store: Store, me: bytes, now_ms: int) -> None:
    """Count the journal's rows again, then rebuild the reporter's holds."""
    reporter.recover(journal.load(store.conn))
    hold = reporter.outcome_hold
    if not hold.enabled:
        return
    newest = store.newest_of(me, tuple(KEYS), now_ms - 3 * hold.max_ms, MAX_OPS)
    try:  # (applied at the store's opening: read again, never refused)
        oldest = [(k, ts, ops.decode_checked_before(raw).body) for k, ts, raw in newest[::-1]]
    except (GossipmindError, ValueError, TypeError) as exc:  # a start goes on: as before
        log.warning("could not read back own report ops (streams start again): %s", exc)
        return
    writes = own_writes(oldest)
    held = resume(reporter, writes["pattern.report"], writes["fix.outcome"], now_ms)
    if held:
        log.info("resumed the holds of %d report streams from %d own ops", held, len(newest))


def own_writes(oldest: Iterable[tuple[str, int, Any]]) -> dict[str, list[Write]]:
    """The hold's writes of each kind that report ops ``(kind, ts, body)`` show, in
    the order given. An op whose body does not read as one is left out."""
    out: dict[str, list[Write]] = {kind: [] for kind in KEYS}
    for kind, ts, body in oldest:
        try:
            key, first = body[KEYS[kind]], body["window"][0]
        except (KeyError, IndexError, TypeError):
            continue
        if isinstance(key, bytes) and isinstance(first, int):
            out[kind].append((key, ts, first))
    return out


def resume(
    reporter: Reporter, failures: Iterable[Write], outcomes: Iterable[Write], now_ms: int
) -> int:
    """Replay the writes into the reporter's holds (oldest first); returns how many
    keys they hold at ``now_ms``."""
    hold: Hold | None = reporter.failures.hold
    held = 0 if hold is None else hold.replay(failures, now_ms)
    return held + reporter.outcome_hold.replay(outcomes, now_ms)
