"""A replica of one network's knowledge base: validity, causal delivery, fold.

Pure and deterministic: no I/O, no clock, no randomness. The store persists
what a replica accepts; the network feeds it ops in any order.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gossipmind.core import ops as opsmod
from gossipmind.core.dag import DEFAULT_MAX_BYTES, DEFAULT_MAX_OPS, Pending
from gossipmind.core.errors import InvalidOp, SchemaError, cap_detail
from gossipmind.core.fold import Fold, Meta
from gossipmind.core.identity import Identity
from gossipmind.core.membership import (
    Grant,
    Membership,
    Revoke,
    Roles,
    authorize,
)
from gossipmind.core.ops import GENESIS_NET, MAX_DEPS, Op
from gossipmind.core.policy import Policy
from gossipmind.core.schema import check_body

MEMBERSHIP_KINDS = frozenset({"net.genesis", "member.grant", "member.revoke"})
_KIND_NAMES = {k: k for k in opsmod.KINDS}  # a kind's one str object (Replica._commit)
ROOT_DOMAIN = b"gossipmind/root/1\x00"
# The fold's rules, as a number: stores rewrite their materialised rows when it
# changes (2: the admin check on revokes; 3: revokes by seniority and
# self-defeating revokes, protocol.md §6.2; 4: an admin grant arriving after
# revokes reorders them, row integers saturate, evidence too deep for a row is
# held encoded, a step's `type` is no constraint field; 5: a fix must have its
# pattern's scope to be accepted, fix rows show `pattern_scope`, each author's
# outcomes weigh at most OUTCOME_CAP attempts; 6: the pattern scope of a
# service.operation longer than 64 characters is its longest prefix that fits
# and ends before a `.`, not the bare service; 7: pattern rows show
# `latency_ms_typical` and `retry_after_ms_typical`, medians over the authors,
# which synthesis and drills use). The state root does not depend
# on it: it covers the valid ops, not the fold.
# tests/core/test_fold_version.py fails when the fold's output changes and this
# does not.
FOLD_VERSION = 7
ROLES_CACHE = 65_536  # (membership past, key) -> roles entries kept per cache
DEFAULT_MAX_REJECTED = 100_000  # as many as the store keeps (store.sqlite.MAX_REJECTED_ROWS)


@dataclass
class IngestResult:
    applied: list[Op] = field(default_factory=list)
    rejected: list[tuple[bytes, str, str]] = field(default_factory=list)  # id, code, detail
    pending: list[bytes] = field(default_factory=list)
    evicted: list[bytes] = field(default_factory=list)
    duplicates: int = 0

    def extend(self, other: IngestResult) -> None:
        self.applied += other.applied
        self.rejected += other.rejected
        self.pending += other.pending
        self.evicted += other.evicted
        self.duplicates += other.duplicates


class Rejected(OrderedDict[bytes, tuple[str, str]]):
    """Ids of invalid ops with their reason (code, detail); the oldest are forgotten
    past ``limit``. Anyone can make a node reject ops (a validly signed op by a key
    nobody granted costs a signature), so an unbounded record is unbounded memory.
    Forgetting is harmless: a forgotten op that comes back is verified and rejected
    again, and an op depending on it waits in the pending buffer instead of being
    rejected; neither is ever applied, so no state depends on what was forgotten.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: bytes, value: tuple[str, str]) -> None:
        code, detail = value  # a detail read back from an older store may be long
        super().__setitem__(key, (code, cap_detail(detail)))
        while len(self) > self.limit:
            self.popitem(last=False)

    def setdefault(self, key: bytes, default: tuple[str, str] = ("", "")) -> tuple[str, str]:
        if key not in self:
            self[key] = default
        return self[key]


def check_genesis(op: Op) -> Policy:
    """Validate a genesis op on its own; return its policy."""
    if op.kind != "net.genesis":
        raise InvalidOp("genesis", f"expected net.genesis, got {op.kind}")
    if op.net != GENESIS_NET or op.seq != 1 or op.lamport != 1 or op.deps:
        raise InvalidOp("genesis", "genesis must have net=0*32, seq=1, lamport=1 and no deps")
    try:
        check_body(op.kind, op.body)
    except SchemaError as exc:
        raise InvalidOp("schema", str(exc)) from exc
    if not op.verify_signature():
        raise InvalidOp("signature", "bad genesis signature")
    return Policy.from_body(op.body["policy"])


class Replica:
    """Applies ops in causal order; keeps heads, pending, rejected, and the fold."""

    def __init__(
        self,
        genesis: Op,
        *,
        max_pending: int = DEFAULT_MAX_OPS,
        max_pending_bytes: int = DEFAULT_MAX_BYTES,
        max_rejected: int = DEFAULT_MAX_REJECTED,
    ) -> None:
        self.policy = check_genesis(genesis)
        self.genesis = genesis
        self.net = genesis.id
        self.meta: dict[bytes, Meta] = {}
        self.rejected = Rejected(max_rejected)
        self.heads: set[bytes] = set()
        # author -> the id of its (first) applied op at seq 1, 2, …: an applied op's
        # deps hold its author's op at seq - 1 (_check_context), so an author's
        # seqs are contiguous; the other ops at a seq (forks) are in equivocations.
        # (A list entry per op: a dict of (author, seq) -> [ids] cost ~190 B more.)
        self._chains: dict[bytes, list[bytes]] = {}
        self._authors: dict[bytes, bytes] = {}  # each author's key, one object (_commit)
        self.last_seq: dict[bytes, int] = {}
        self.membership = Membership()
        # membership pasts as bit masks over membership ops (membership.py), interned
        self.msets: list[int] = []
        self._mset_index: dict[int, int] = {}
        self._closed: dict[bytes, int] = {}  # membership op -> mset of past + itself
        self._bits = 0  # membership ops committed: the next one's bit
        self._valid_roles: dict[tuple[int, bytes], Roles] = {}  # never stale
        self._eff_roles: dict[tuple[int, bytes], Roles] = {}  # until membership changes
        self.fold = Fold(self.policy)
        self.pending = Pending(max_pending, max_pending_bytes)
        self._root: bytes | None = None
        # the applied op ids in sorted order (for the root), and those applied since
        # (meta never loses an id): a root after k new ops sorts k, not all of them
        self._sorted_ids: list[bytes] = []
        self._unsorted_ids: list[bytes] = []
        self.equivocations: dict[tuple[bytes, int], list[bytes]] = {}
        self.members_dirty = True  # set when membership or equivocations change
        # the equivocations keys changed since the store wrote them (None: all of them)
        self.forks_dirty: set[tuple[bytes, int]] | None = None
        self._deferred: bool | None = None  # in a batch(): whether a recompute is due
        self.recomputes = 0  # whole-set recomputations so far (revokes, equivocators)
        self._commit(genesis, self._intern(0))

    # -- ingest ---------------------------------------------------------------

    def ingest_raw(self, raw: bytes) -> IngestResult:
        try:
            op = opsmod.decode(raw)
        except InvalidOp as exc:
            result = IngestResult()
            result.rejected.append((opsmod.op_id(bytes(raw)), exc.code, exc.detail))
            return result
        return self.ingest(op)

    def ingest_many(self, ops: list[Op]) -> IngestResult:
        result = IngestResult()
        for op in ops:
            result.extend(self.ingest(op))
        return result

    def ingest(self, op: Op, *, verified: bool = False) -> IngestResult:
        """Take one decoded op. ``verified`` skips a signature already checked."""
        result = IngestResult()
        if op.id in self.meta or op.id in self.pending or op.id in self.rejected:
            result.duplicates += 1
            return result
        try:
            self._check_stateless(op, verified)
        except InvalidOp as exc:
            self._reject(op.id, exc, result)
            return result
        bad = [d for d in op.deps if d in self.rejected]
        if bad:
            self._reject(
                op.id, InvalidOp("invalid_dep", f"dep {bad[0].hex()[:12]} is invalid"), result
            )
            return result
        missing = {d for d in op.deps if d not in self.meta}
        if missing:
            result.evicted += self.pending.add(op, missing)
            if op.id in self.pending:
                result.pending.append(op.id)
            return result
        self._apply_ready(op, result)
        return result

    def known(self, op_id: bytes) -> bool:
        """True if the op is applied, pending or rejected here (no need to verify it)."""
        return op_id in self.meta or op_id in self.pending or op_id in self.rejected

    def reject(self, op: Op, code: str, detail: str) -> IngestResult:
        """Record ``op`` as invalid for a reason found outside (e.g. a parallel verifier)."""
        result = IngestResult()
        if not self.known(op.id):
            self._reject(op.id, InvalidOp(code, detail), result)
        return result

    def _check_stateless(self, op: Op, verified: bool) -> None:
        if op.net != self.net:
            raise InvalidOp("wrong_network", f"op is for network {op.net.hex()[:12]}")
        if op.kind == "net.genesis":
            raise InvalidOp("genesis", "a network has exactly one genesis")
        if not op.deps:
            raise InvalidOp("no_deps", "every op but the genesis has deps")
        try:
            check_body(op.kind, op.body)
        except SchemaError as exc:
            raise InvalidOp("schema", str(exc)) from exc
        if not verified and not op.verify_signature():
            raise InvalidOp("signature", "the signature does not verify")

    def _apply_ready(self, op: Op, result: IngestResult) -> None:
        queue = [op]
        while queue:
            current = queue.pop()
            try:
                mset = self._check_context(current)
            except InvalidOp as exc:
                self._reject(current.id, exc, result)
                continue
            self._commit(current, mset)
            result.applied.append(current)
            queue.extend(reversed(self.pending.resolved(current.id)))

    def _reject(self, op_id: bytes, exc: InvalidOp, result: IngestResult) -> None:
        stack = [(op_id, exc.code, exc.detail)]
        while stack:
            oid, code, detail = stack.pop()
            self.rejected[oid] = (code, detail)
            result.rejected.append((oid, code, detail))
            for waiter in self.pending.dropped(oid):
                stack.append((waiter.id, "invalid_dep", f"dep {oid.hex()[:12]} is invalid"))

    def _check_context(self, op: Op) -> int:
        """Validity against the causal past (deps all applied). Returns the op's mset."""
        deps = [self.meta[d] for d in op.deps]
        lamport = 1 + max(d.lamport for d in deps)
        if op.lamport != lamport:
            raise InvalidOp("lamport", f"lamport must be {lamport} (1 + max of deps)")
        if op.seq > 1 and not any(d.author == op.author and d.seq == op.seq - 1 for d in deps):
            raise InvalidOp("seq_gap", f"deps lack the author's op with seq {op.seq - 1}")
        if op.seq == 1 and any(d.author == op.author for d in deps):
            raise InvalidOp("seq_gap", "seq 1 cannot depend on the author's own ops")
        mset = self._union(deps)
        authorize(op.kind, op.body, self._roles(mset, op.author, effective=False), self.policy)
        if (
            op.kind == "member.grant"
            and self._roles(mset, op.body["member"], effective=False).revoked
        ):
            raise InvalidOp("revoked_member", "that key was revoked; grant a new key")
        return mset

    # -- commit ---------------------------------------------------------------

    def _commit(self, op: Op, mset: int) -> None:
        # one bytes object per author, per op id and per kind name, shared by every
        # op that names it (a decoded op brings copies: ~65 B each, several per op)
        author = self._authors.setdefault(op.author, op.author)
        deps = tuple(self.meta[d].id for d in op.deps)
        kind = _KIND_NAMES.get(op.kind, op.kind)
        meta = Meta(op.id, author, op.seq, op.lamport, kind, deps, op.ts, mset)
        self.meta[op.id] = meta
        self._unsorted_ids.append(op.id)
        self._root = None
        self.heads.difference_update(op.deps)
        self.heads.add(op.id)
        self.last_seq[op.author] = max(self.last_seq.get(op.author, 0), op.seq)
        chain = self._chains.setdefault(op.author, [])
        forked = op.seq <= len(chain)  # else op.seq == len(chain) + 1 (contiguous)
        if forked:
            key = (op.author, op.seq)
            forks = self.equivocations.get(key)
            if forks is None:
                self.equivocations[key] = sorted([chain[op.seq - 1], op.id])
            else:  # in place: a copy and a sort per fork made a fork flood quadratic
                bisect.insort(forks, op.id)
            if self.forks_dirty is not None:
                self.forks_dirty.add(key)
        else:
            chain.append(op.id)
        new_equivocator = forked and op.author not in self.membership.equivocators
        if forked:
            self.members_dirty = True
            self.membership.equivocators.add(op.author)
        if op.kind in MEMBERSHIP_KINDS:
            self.members_dirty = True
            bit, self._bits = self._bits, self._bits + 1
            self._closed[op.id] = self._intern(self.msets[mset] | (1 << bit))
            reorders = self._reorders_revokes(op)
            self._commit_membership(op, meta, bit)
            if op.kind == "member.revoke" or new_equivocator or reorders:
                self._recompute_now_or_later()
            return
        if new_equivocator:
            self._recompute_now_or_later()
        meta.effective, roles = self._effective(meta, op.body)
        self.fold.add(meta, op.body, roles, op.raw)

    def _reorders_revokes(self, op: Op) -> bool:
        """Whether ``op``, an admin grant, changes the revoke order: revokes are
        taken by their author's admin depth over *every* admin grant (§6.2), so
        one arriving after them can change which revokes count. Nothing else a
        new grant changes needs a recomputation: no op already applied has it
        in its causal past, and its own effectiveness :meth:`Membership.add_grant`
        decides from its past alone."""
        if op.kind != "member.grant" or op.body["role"] != "admin":
            return False
        if not self.membership.revokes:  # no order to change
            return False
        return self.membership.lowers_depth(op.author, op.body["member"], self.genesis.author)

    def _commit_membership(self, op: Op, meta: Meta, bit: int) -> None:
        b = op.body
        past = self.msets[meta.mset]
        if op.kind == "member.revoke":
            rv = Revoke(
                op.id,
                op.author,
                op.seq,
                op.lamport,
                b["member"],
                b["retroactive"],
                b["reason"],
                self._past_seq(op, b["member"]),
                meta.mset,
                bit,
            )
            self.membership.add_revoke(rv)
            return
        genesis = op.kind == "net.genesis"
        grant = Grant(
            op.id,
            op.author,
            op.seq,
            op.lamport,
            op.author if genesis else b["member"],
            "admin" if genesis else b["role"],
            b.get("tier", 0),
            tuple(b.get("scopes", ())),
            "" if genesis else b.get("name", ""),
            meta.mset,
            bit,
        )
        self.membership.add_grant(grant, past, genesis=genesis)
        meta.effective = op.id in self.membership.effective_grants
        self._eff_roles.clear()

    def _past_seq(self, op: Op, member: bytes) -> int:
        """Highest seq of ``member`` among the ops in ``op``'s causal past."""
        best, seen, stack = 0, set(op.deps), list(op.deps)
        while stack:
            m = self.meta[stack.pop()]
            if m.author == member and m.seq > best:
                best = m.seq
            for d in m.deps:
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
        return best

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Apply a batch of ops with one recomputation at the end instead of one
        per revoke or new equivocator. Validity never depends on it (it uses
        validity views), and the recomputation rebuilds every op's
        effectiveness and every aggregate, so the state after the batch is the
        same; ops applied within it may count by stale membership until then."""
        if self._deferred is not None:  # nested: the outer batch recomputes
            yield
            return
        self._deferred = False
        try:
            yield
        finally:
            due, self._deferred = self._deferred, None
            if due:
                self._recompute()

    def _recompute_now_or_later(self) -> None:
        if self._deferred is None:
            self._recompute()
        else:
            self._deferred = True

    def _recompute(self) -> None:
        self.recomputes += 1  # any op's effectiveness may have changed (node/fixes.py)
        self.membership.recompute(self.msets, self.net)
        for oid in self.membership.grants.keys() | self.membership.revokes.keys():
            m = self.meta[oid]
            m.effective = (
                oid in self.membership.effective_grants or oid in self.membership.effective_revokes
            )
        self._eff_roles.clear()
        self.fold.rebuild(self._effective)

    def _effective(self, meta: Meta, body: dict[str, Any]) -> tuple[bool, Roles]:
        roles = self._roles(meta.mset, meta.author, effective=True)
        if self.membership.voided(meta.author, meta.seq):
            return False, roles
        try:
            authorize(meta.kind, body, roles, self.policy)
        except InvalidOp:
            return False, roles
        return True, roles

    # -- membership sets --------------------------------------------------------

    def _intern(self, mask: int) -> int:
        idx = self._mset_index.get(mask)
        if idx is None:
            idx = len(self.msets)
            self.msets.append(mask)
            self._mset_index[mask] = idx
        return idx

    def _union(self, deps: list[Meta]) -> int:
        ids = {self._closed.get(d.id, d.mset) for d in deps}
        if len(ids) == 1:
            return ids.pop()
        merged = 0
        for i in ids:
            merged |= self.msets[i]
        return self._intern(merged)

    def _roles(self, mset: int, key: bytes, *, effective: bool) -> Roles:
        cache = self._eff_roles if effective else self._valid_roles
        roles = cache.get((mset, key))
        if roles is None:
            roles = self.membership.roles(self.msets[mset], key, effective=effective)
            if len(cache) >= ROLES_CACHE:  # derived data: start afresh rather than grow
                cache.clear()
            cache[(mset, key)] = roles
        return roles

    # -- authoring --------------------------------------------------------------

    def ops_at(self, author: bytes, seq: int) -> list[bytes]:
        """The ids of ``author``'s applied ops at ``seq``, sorted (two or more: a
        fork); none if it has none there."""
        forked = self.equivocations.get((author, seq))
        if forked is not None:
            return list(forked)
        chain = self._chains.get(author)
        return [chain[seq - 1]] if chain is not None and 1 <= seq <= len(chain) else []

    def create(self, identity: Identity, kind: str, body: dict[str, Any], ts: int) -> Op:
        """Sign a new op on top of the current heads; raise InvalidOp if it would be invalid.

        Nothing is changed when the op is invalid. An equivocating key signs
        nothing more: every op of it is void, now and for good (protocol.md §6.2).
        """
        author = identity.public
        if author in self.membership.equivocators:
            raise InvalidOp(
                "equivocating",
                "this key signed two different ops with one seq (a store restored from "
                "an old backup, or the key on two nodes): every op it signs is void; "
                "give the host a new key (operations.md section 9)",
            )
        seq = self.last_seq.get(author, 0) + 1
        deps = set(self.heads)
        if seq > 1:
            own = max(self.ops_at(author, seq - 1))
            deps.add(own)
            if len(deps) > MAX_DEPS:
                others = sorted(
                    (d for d in deps if d != own),
                    key=lambda d: (self.meta[d].lamport, d),
                    reverse=True,
                )
                deps = {own, *others[: MAX_DEPS - 1]}
        elif len(deps) > MAX_DEPS:
            deps = set(sorted(deps, key=lambda d: (self.meta[d].lamport, d))[-MAX_DEPS:])
        lamport = 1 + max(self.meta[d].lamport for d in deps)
        op = opsmod.create(
            identity,
            net=self.net,
            kind=kind,
            seq=seq,
            lamport=lamport,
            deps=sorted(deps),
            ts=ts,
            body=body,
        )
        self._check_stateless(op, verified=True)
        if self.known(op.id):  # pragma: no cover - a fresh seq gives a fresh id
            raise InvalidOp("internal", "a new op has the id of a known one")
        # checked once, then committed: no op can wait in the pending buffer for an
        # id that did not exist until now, so nothing else becomes ready
        self._commit(op, self._check_context(op))
        return op

    # -- queries ----------------------------------------------------------------

    def root(self) -> bytes:
        """The state root: see :func:`state_root`. Cached until the next op applies;
        then the ids applied since are merged into the sorted ones (timsort merges a
        sorted run with a short tail in about linear time, not n log n)."""
        if self._root is None:
            if self._unsorted_ids:
                merged = self._sorted_ids + self._unsorted_ids
                merged.sort()  # (whatever interrupts it, both lists are still right)
                self._sorted_ids, self._unsorted_ids = merged, []
            self._root = state_root(self._sorted_ids, len(self._sorted_ids))
        return self._root

    def roles(self, author: bytes) -> Roles:
        """Effective roles of ``author`` given everything this replica holds."""
        return self.membership.roles((1 << self._bits) - 1, author, effective=True)

    def version_vector(self) -> dict[bytes, int]:
        return dict(self.last_seq)


ROOT_CHUNK = 4096  # ids hashed per update: 128 KiB joined at a time


def state_root(sorted_ids: Iterable[bytes], count: int) -> bytes:
    """BLAKE2b-256 of the domain, the count (u64 big-endian) and the sorted valid op ids."""
    h = hashlib.blake2b(ROOT_DOMAIN, digest_size=32)
    h.update(count.to_bytes(8, "big"))
    it = iter(sorted_ids)
    while chunk := b"".join(itertools.islice(it, ROOT_CHUNK)):  # (one update per op: 4x slower)
        h.update(chunk)
    return h.digest()


def create_genesis(identity: Identity, name: str, policy: Policy, nonce: bytes, ts: int) -> Op:
    """Sign the genesis op of a new network; its id is the network id."""
    body = {"name": name, "nonce": nonce, "policy": policy.to_body()}
    op = opsmod.create(
        identity, net=GENESIS_NET, kind="net.genesis", seq=1, lamport=1, deps=[], ts=ts, body=body
    )
    check_genesis(op)
    return op
