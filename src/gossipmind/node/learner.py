"""Sleep-time learning: synthesize, drill and propose fixes while the agent is idle.

Work runs only after the agent has made no request for ``idle_s`` seconds,
stops at once when a request arrives (checked between small steps), and keeps
its CPU share under ``cpu_budget`` by sleeping in proportion to the time it
worked. An agent that is never idle that long would keep its node from ever
learning (a soak: requests every ~0.7 s, no node learned in 17 minutes with
patterns over the threshold): when no round has completed for ``max_wait_s``,
one round runs while the agent is busy, within the same CPU budget, not
stopped by requests (``busy_rounds``).

Finding the due patterns costs what changed, not what the replica holds: the
learner reads only the ops applied since its last look (``fold.records`` keeps
them in the order they applied) and looks again at the patterns they touch; it
looks at every pattern only at start and after a goal op or a whole-set
recomputation, which can change any fix's status. An idle round with nothing
new examines no pattern and no fix. A proposal refused because this key is not
(or no longer) a member leaves its pattern due, and the learner waits, doing
nothing, until the membership changes.

Nodes that see a pattern cross the threshold together would all drill and
propose its fix before gossip brings them each other's proposal (identical
proposals merge by fix id, but each is an op every node keeps for good). So
each node takes a turn per pattern (:func:`proposer_rank`), in an order every
replica computes alike: members that proposed some fix before (they run a
learner), then the others (an admin's or a person's key), then members not seen
for an hour; in each, those that did not report it (their agents were not seen
busy) before its reporters; each group by a hash of pattern id and key. The
first proposes at once; the
k-th puts the pattern aside for ``k x propose_wait_s`` (at most
``PROPOSE_WAIT_RANKS`` turns), counted from the round that first reached it
after this node's earlier turns, without synthesizing or drilling, then looks
again: a candidate whose fix someone proposed meanwhile is neither drilled nor
proposed (``skipped_proposed``). A first-ranked node that is dead, busy or
refused only delays the proposal.

A pattern whose candidates were all handled is done, until every fix proposed
for it ends ``rejected`` or ``revoked`` by a verdict that came after: then it is
looked at again (``reconsidered``), and a candidate whose own fix ended so is
replaced by its ``fallback`` (learn/synth.py): the rate-limit rule's 4th attempt
sits near the verifiers' amplification cap, a verifier whose view of the pattern
differs a little rejects it, and the 3-attempt recipe is still a fix. A
candidate without a fallback whose fix ended so is not proposed again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from gossipmind.core.errors import GossipmindError, InvalidOp, StoreError
from gossipmind.core.fold import record_body
from gossipmind.core.replica import Replica
from gossipmind.core.schema import fix_id
from gossipmind.core.snapshot import fix_row, pattern_row
from gossipmind.learn.drill import drill
from gossipmind.learn.simulator import FaultModel
from gossipmind.learn.synth import (
    Candidate,
    Synthesizer,
    is_non_idempotent,
    propose_body,
    synthesize,
)

log = logging.getLogger("gossipmind.node.learner")

Write = Callable[[str, dict[str, Any]], Awaitable[object]]
MAX_LISTED = 64  # proposals listed in the learner's stats (the count is `proposed`)
# Refusals about this key's membership, not about the proposal: tried again once
# the membership changes (a grant may be on its way: docs/operations.md §6).
MEMBERSHIP_CODES = frozenset({"not_member", "revoked", "equivocating"})
GOAL_KINDS = frozenset({"goal.set", "goal.review"})  # can change any fix's status
_TOUCHING = frozenset({"pattern.report", "fix.propose", "fix.attest", "fix.revoke"})
ENDED = frozenset({"rejected", "revoked"})  # a fix verifiers judged: its fallback's turn
PROPOSE_WAIT_S = 2.0  # a node waits this long per earlier turn before it proposes
PROPOSE_WAIT_RANKS = 4  # ... for at most this many turns (then it proposes anyway)
STALE_MS = 3_600_000  # no sign of a member for this long before a report: it comes last


def _turn_key(pattern: bytes, key: bytes) -> bytes:
    return hashlib.blake2b(pattern + key, digest_size=16).digest()


def may_propose(replica: Replica) -> list[bytes]:
    """The keys that may propose now, as far as the replica knows: granted keys and
    authors (every author, in an open network) that are members, not revoked and
    not equivocating."""
    m = replica.membership
    policy = replica.policy
    keys = m.grants_to.keys() | replica.last_seq.keys()
    return sorted(k for k in keys if k not in m.equivocators and replica.roles(k).is_member(policy))


def _last_sign_ms(replica: Replica, key: bytes) -> int:
    """The latest ts of an op by ``key`` or of a grant naming it (-1: none)."""
    ts = -1
    seq = replica.last_seq.get(key)
    if seq is not None:
        ts = max((replica.meta[i].ts for i in replica.ops_at(key, seq)), default=-1)
    for g in replica.membership.grants_to.get(key, ()):
        ts = max(ts, replica.meta[g.op_id].ts)
    return ts


def proposers(replica: Replica) -> set[bytes]:
    """The keys with a proposal of some fix in the replica: nodes that run a learner."""
    return {k for f in replica.fold.fixes.values() for k in f.proposals}


def proposer_rank(
    replica: Replica,
    pattern: bytes,
    me: bytes,
    members: Sequence[bytes] | None = None,
    proposed: Collection[bytes] | None = None,
) -> int:
    """This node's turn to propose for ``pattern``: how many nodes come first.

    The order, the same on every replica with the same ops: last the members with
    no sign of life (no op of theirs nor grant naming them) in the ``STALE_MS``
    before the pattern's last report (an offline key); before them the members
    that never proposed a fix (an admin's or a person's key, which runs no
    learner: four of them ahead would put every node at the capped wait, and all
    would propose at once); and in each of those groups first the members that
    did not report the pattern (their agents were not seen busy: a learner runs
    only while its agent is idle), then its reporters; within each by
    ``blake2b(pattern || key)``. ``members``: :func:`may_propose`, ``proposed``:
    :func:`proposers`, if known.
    """
    p = replica.fold.patterns.get(pattern)
    if p is None:
        return 0
    keys = may_propose(replica) if members is None else members
    proposed = proposers(replica) if proposed is None else proposed
    reporters = {a for a, v in p.per_author.items() if v[0] > 0}

    def place(key: bytes) -> tuple[bool, bool, bool, bytes]:
        stale = _last_sign_ms(replica, key) < p.last_ts - STALE_MS
        return stale, key not in proposed, key in reporters, _turn_key(pattern, key)

    mine = place(me)
    return sum(1 for k in keys if k != me and place(k) < mine)


@dataclass
class LearnerStats:
    rounds: int = 0
    interrupted: int = 0
    synthesized: int = 0
    drilled: int = 0
    proposed: int = 0
    skipped_worse: int = 0
    skipped_proposed: int = 0  # candidates someone proposed first: not drilled, not proposed
    waiting_turn: int = 0  # due patterns set aside for an earlier-ranked node's proposal
    reconsidered: int = 0  # done patterns looked at again: every fix of theirs ended rejected
    fallbacks: int = 0  # candidates replaced by their fallback (their fix ended rejected)
    refused: int = 0  # proposals refused (invalid, or this key may not propose)
    waiting_membership: bool = False  # refused not_member/revoked: waits for a membership change
    busy_rounds: int = 0  # rounds run while the agent was busy (none completed for max_wait_s)
    busy_s: float = 0.0
    last_error: str = ""
    proposals: list[str] = field(default_factory=list)  # the latest MAX_LISTED fix ids


class Learner:
    def __init__(
        self,
        replica: Replica,
        write: Write,
        *,
        idle_s: float = 5.0,
        cpu_budget: float = 0.25,
        max_wait_s: float = 60.0,
        tick_s: float = 0.5,
        synthesizers: Sequence[Synthesizer] | None = None,
        me: bytes | None = None,
        propose_wait_s: float = PROPOSE_WAIT_S,
    ) -> None:
        if not 0 < cpu_budget <= 1:
            raise ValueError("cpu_budget must be in (0, 1]")
        self.replica = replica
        self._write = write
        self.idle_s = idle_s
        self.cpu_budget = cpu_budget
        self.max_wait_s = max_wait_s
        self.tick_s = tick_s
        self.synthesizers = synthesizers
        self.me = me  # this node's key (None: no turns, propose at once)
        self.propose_wait_s = propose_wait_s
        self.stats = LearnerStats()
        self._last_request = trio.current_time() if _in_trio() else 0.0
        self._completed = self._last_request  # when a round last ran to its end
        self._busy = False  # the current round runs while the agent is busy
        self._generation = 0
        # patterns whose candidates were all handled -> how many of their fixes had
        # ended rejected or revoked then (more, and none live: look again)
        self._done: dict[bytes, int] = {}
        # what due() keeps between calls, updated from the ops applied since
        self._due: set[bytes] = set()  # over the threshold, no accepted fix, not done
        self._by_pattern: dict[bytes, set[bytes]] = {}  # pattern -> its proposed fixes
        self._seen = 0  # fold.records already read
        self._recomputes = -1  # replica.recomputes as of the last look (-1: never looked)
        self._waiting: tuple[int, int, int] | None = None  # membership when refused
        self.examined = 0  # patterns and fixes looked at by due(), for tests and tuning
        self._turn_from: dict[bytes, float] = {}  # pattern -> when its wait for a turn began
        self._ranks: dict[bytes, tuple[tuple[int, ...], int]] = {}  # (stamp, rank)
        self._members: tuple[tuple[int, ...], list[bytes]] | None = None  # may_propose
        self._proposers: set[bytes] = set()  # proposers(), kept from the ops applied since

    def activity(self) -> None:
        """The agent made a request: learning yields now and waits for idleness again."""
        self._generation += 1
        self._last_request = trio.current_time()

    def idle(self) -> bool:
        return trio.current_time() - self._last_request >= self.idle_s

    def due(self) -> list[dict[str, Any]]:
        """Pattern rows over the threshold with no accepted fix, most reporters first."""
        self._refresh()
        return self._rows({pid: 0 for pid in self._due})

    def in_turn(self) -> list[dict[str, Any]]:
        """The due patterns whose turn to be proposed by this node has come, this
        node's earliest turns first (then most reporters first).

        A pattern where ``k`` nodes come first waits ``k x propose_wait_s`` (at most
        ``PROPOSE_WAIT_RANKS`` turns), from the first call that finds no pattern of an
        earlier turn of this node ready: its wait begins once this node has taken
        its earlier turns (a backlog of due patterns takes every node a while)."""
        self._refresh()
        for table in (self._turn_from, self._ranks):  # forget patterns no longer due
            for pid in [pid for pid in table if pid not in self._due]:
                del table[pid]
        now = trio.current_time()
        ready: dict[bytes, int] = {}
        first = -1  # the earliest turn with a pattern ready
        for rank, pid in sorted((self._rank(pid), pid) for pid in self._due):
            if rank > 0:
                began = self._turn_from.get(pid)
                if began is None:
                    if 0 <= first < rank:
                        continue  # earlier turns of this node first: the wait has not begun
                    began = self._turn_from[pid] = now
                if now < began + min(rank, PROPOSE_WAIT_RANKS) * self.propose_wait_s:
                    continue
            if first < 0:
                first = rank
            ready[pid] = rank
        self.stats.waiting_turn = len(self._due) - len(ready)
        return self._rows(ready)

    def _rows(self, ranks: dict[bytes, int]) -> list[dict[str, Any]]:
        threshold = self.replica.policy.synthesis_threshold
        patterns = self.replica.fold.patterns
        rows = [pattern_row(patterns[pid], threshold) for pid in ranks]
        return sorted(
            rows, key=lambda x: (ranks[x["pattern"]], -x["reporters"], -x["count"], x["pattern"])
        )

    def _refresh(self) -> None:
        """Bring ``_due`` up to date with the ops applied since the last call."""
        r = self.replica
        fold = r.fold
        records = fold.records
        everything = r.recomputes != self._recomputes or len(records) < self._seen
        touched: set[bytes] = set()
        judged: set[bytes] = set()  # touched by a verdict: a done pattern may be open again
        if not everything:
            for meta, raw, _ in records.since(self._seen):
                kind = meta.kind
                if kind in GOAL_KINDS:
                    everything = True
                    break
                if kind not in _TOUCHING:
                    continue
                body = record_body(raw)
                if kind == "pattern.report":
                    touched.add(body["pattern"])
                elif kind == "fix.propose":
                    self._proposers.add(meta.author)
                    pid = body["pattern"]
                    self._by_pattern.setdefault(pid, set()).add(fix_id(pid, body["recipe"]))
                    touched.add(pid)
                else:  # fix.attest, fix.revoke
                    f = fold.fixes.get(body["fix"])
                    if f is not None and f.recipe is not None:
                        touched.add(f.pattern)
                        judged.add(f.pattern)
        self._seen = len(records)
        if everything:  # at start, after a goal op or a whole-set recomputation
            self._recomputes = r.recomputes
            self._by_pattern = {}
            self._proposers = proposers(r)
            for fid, f in fold.fixes.items():
                if f.recipe is not None:
                    self._by_pattern.setdefault(f.pattern, set()).add(fid)
            self._due.clear()
            touched = judged = set(fold.patterns)
        for pid in touched:
            self._recheck(pid, pid in judged)

    def _ended(self, pid: bytes) -> tuple[int, bool]:
        """How many of the pattern's fixes ended rejected or revoked, and whether
        any other is live (proposed, accepted, blocked by a goal)."""
        ended, live = 0, False
        for fid in self._by_pattern.get(pid, ()):
            self.examined += 1
            row = fix_row(self.replica, self.replica.fold.fixes[fid])
            if row is None:
                continue
            if row["status"] in ENDED:
                ended += 1
            else:
                live = True
        return ended, live

    def _recheck(self, pid: bytes, judged: bool = False) -> None:
        self._due.discard(pid)
        self._ranks.pop(pid, None)  # a new reporter may change the turns
        fold = self.replica.fold
        p = fold.patterns.get(pid)
        self.examined += 1
        if p is None:
            return
        if pid in self._done:
            if not judged:
                return
            ended, live = self._ended(pid)
            if live or ended <= self._done[pid]:
                return
            del self._done[pid]  # every fix of it ended rejected since: look again
            self.stats.reconsidered += 1
        if p.reporters < self.replica.policy.synthesis_threshold:
            return
        for fid in self._by_pattern.get(pid, ()):
            self.examined += 1
            row = fix_row(self.replica, fold.fixes[fid])
            if row is not None and row["status"] == "accepted":
                return
        self._due.add(pid)

    def _membership(self) -> tuple[int, int, int]:
        """Changes whenever a membership op applies or effectiveness is recomputed."""
        m = self.replica.membership
        return len(m.grants), len(m.revokes), self.replica.recomputes

    def _mark_done(self, pid: bytes) -> None:
        self._done[pid] = self._ended(pid)[0]
        self._due.discard(pid)
        self._turn_from.pop(pid, None)
        self._ranks.pop(pid, None)

    def _rank(self, pid: bytes) -> int:
        """:func:`proposer_rank`, computed again only when an op touched the pattern
        (``_recheck`` forgets it), the membership or the proposers changed."""
        if self.me is None or self.propose_wait_s <= 0:
            return 0
        stamp = (*self._membership(), len(self._proposers))
        cached = self._ranks.get(pid)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        known = (*stamp, len(self.replica.last_seq))  # a new author (open network)
        if self._members is None or self._members[0] != known:
            self._members = (known, may_propose(self.replica))
        rank = proposer_rank(self.replica, pid, self.me, self._members[1], self._proposers)
        self._ranks[pid] = (stamp, rank)
        return rank

    async def run(self) -> None:
        while True:
            await trio.sleep(self.tick_s)
            if self.idle():
                await self.round()
            elif trio.current_time() - self._completed >= self.max_wait_s:
                self.stats.busy_rounds += 1
                self._busy = True  # the agent is never idle long enough: learn anyway
                try:
                    await self.round()
                finally:
                    self._busy = False
                    self._completed = trio.current_time()  # at most one per max_wait_s

    async def round(self) -> int:
        """One pass over the due patterns; returns how many fixes were proposed."""
        self.stats.rounds += 1
        if self._waiting is not None:
            if self._waiting == self._membership():
                return 0  # this key may not propose until its membership changes
            self._waiting = None
            self.stats.waiting_membership = False
        generation = self._generation
        proposed = 0
        interrupted = self.stats.interrupted
        try:
            rows = await self._step(self.in_turn)
        except StoreError as exc:  # the ops' bytes could not be read back: next round
            self.stats.last_error = f"reading the ops applied since: {exc}"
            log.warning("learner: %s", self.stats.last_error)
            return proposed
        if rows is None:
            return proposed
        for row in rows:
            failed = False
            synth = functools.partial(synthesize, row, self.replica.policy, self.synthesizers)
            candidates = await self._step(synth)
            if candidates is None:
                return proposed
            self.stats.synthesized += len(candidates.candidates)
            for first in candidates.candidates:
                if generation != self._generation and not self._busy:
                    self.stats.interrupted += 1
                    return proposed
                cand = self._instead(row["pattern"], first)
                fid = fix_id(row["pattern"], cand.recipe)
                existing = self.replica.fold.fixes.get(fid)
                if existing is not None and self.replica.fold.fix_view(existing).proposals:
                    self.stats.skipped_proposed += 1
                    continue  # someone proposed it: identical proposals merge by fix id
                model = FaultModel.from_pattern(row)
                idem = not is_non_idempotent(cand.recipe["scope"], self.replica.policy)
                result = await self._step(
                    functools.partial(drill, cand.recipe, model, fid, idempotent=idem)
                )
                if result is None:
                    return proposed
                self.stats.drilled += 1
                if not result.better_than_baseline:
                    self.stats.skipped_worse += 1
                    continue
                summary = {**result.to_body(), "model": model.to_body()}
                membership = self._membership()  # before the write: a grant may come during it
                try:
                    await self._write("fix.propose", propose_body(cand, row["pattern"], summary))
                except InvalidOp as exc:
                    self.stats.last_error = str(exc)
                    self.stats.refused += 1
                    if exc.code not in MEMBERSHIP_CODES:  # the proposal itself: for good
                        log.warning("a fix proposal was refused (not retried): %s", exc)
                        continue
                    # this key's standing, not the proposal: every other one would be
                    # refused too; the pattern stays due until the membership changes
                    self._waiting = membership
                    self.stats.waiting_membership = True
                    log.warning(
                        "a fix proposal was refused (tried again once this key's"
                        " membership changes): %s",
                        exc,
                    )
                    return proposed
                except StoreError as exc:  # transient: try the pattern again next round
                    self.stats.last_error = str(exc)
                    log.warning("could not propose a fix (trying again later): %s", exc)
                    failed = True
                    continue
                except GossipmindError as exc:  # refused (SchemaError): for good
                    self.stats.last_error = str(exc)
                    self.stats.refused += 1
                    log.warning("a fix proposal was refused (not retried): %s", exc)
                    continue
                self.stats.proposed += 1
                self.stats.proposals.append(fid.hex())
                del self.stats.proposals[:-MAX_LISTED]  # status stays small
                proposed += 1
                log.info(
                    "proposed fix %s for pattern %s (drill %d bp vs %d bp)",
                    fid.hex()[:12],
                    row["pattern"].hex()[:12],
                    result.success_bp,
                    result.baseline_success_bp,
                )
            if not failed:
                self._mark_done(row["pattern"])
        if self.stats.interrupted == interrupted:
            self._completed = trio.current_time()
        return proposed

    def _instead(self, pid: bytes, cand: Candidate) -> Candidate:
        """``cand``, or the first of its fallbacks whose predecessor's fix was
        proposed and ended rejected or revoked."""
        fold = self.replica.fold
        while cand.fallback is not None:
            f = fold.fixes.get(fix_id(pid, cand.recipe))
            row = None if f is None else fix_row(self.replica, f)
            if row is None or row["status"] not in ENDED:
                break
            cand = cand.fallback
            self.stats.fallbacks += 1
        return cand

    async def _step(self, work: Callable[[], Any]) -> Any:
        """Run one small piece of work if still idle (or in a busy round), then pay
        for it in sleep."""
        if not self.idle() and not self._busy:
            self.stats.interrupted += 1
            return None
        t0 = time.perf_counter()
        out = work()
        spent = time.perf_counter() - t0
        self.stats.busy_s += spent
        await trio.sleep(spent * (1 - self.cpu_budget) / self.cpu_budget)
        return out


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
