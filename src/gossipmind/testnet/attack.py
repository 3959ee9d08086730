"""Byzantine peers: attack a running testnet and measure what its honest nodes did.

``run(tn, kind, count)`` joins the testnet as a hostile peer (see
:mod:`.attack_peer`), performs one attack of :data:`KINDS`, then measures:

* what was sent (ops, gossip messages, sync frames or streams, bytes, rate);
* per honest node, before and after: rejections by reason (gossip validator and
  ingest), sync counters, pending, ops, state root, and the resident memory of
  its process;
* the time until the honest nodes had counted the expected rejections;
* whether every honest node kept serving: it answers ``GET /v1/status`` and an
  honest op written during the attack and one written after it reach every node;
* whether the state roots are equal at the end, and the attack's own checks
  (an equivocator is flagged everywhere, a spammed pattern keeps one reporter…).

Everything is bounded: counts by each kind's maximum, waits by ``settle``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from gossipmind.core.errors import ConfigError
from gossipmind.testing import sample_report
from gossipmind.testnet import attack_ops as ops
from gossipmind.testnet import attack_wire as wire
from gossipmind.testnet.attack_peer import Expect, Hostile, Sent, open_hostile
from gossipmind.testnet.attack_probe import (
    NodeApi,
    NodeView,
    delta,
    has_op,
    one_root,
    views,
    wait_for,
)
from gossipmind.testnet.launcher import Testnet

SETTLE = 60.0  # seconds to wait for rejections, propagation and equal roots
HONEST_DELAY = 0.5  # the honest op "during" the attack is written this long after it starts


@dataclass(frozen=True)
class Kind:
    name: str
    summary: str
    default: int  # count when none is given
    limit: int  # largest count accepted
    unit: str
    run: Callable[[Hostile, int], Awaitable[Sent]]


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "forged-signature",
            "ops whose signature is not their author's (admin grants, "
            "reports), by gossip and by sync",
            200,
            20_000,
            "ops",
            ops.forged_signature,
        ),
        Kind(
            "replay",
            "valid ops of another network replayed here (and our own ops again)",
            200,
            20_000,
            "ops",
            ops.replay,
        ),
        Kind(
            "non-canonical",
            "honest ops re-encoded in another msgpack form (same signature, "
            "new id), and non-canonical gossip envelopes",
            200,
            20_000,
            "ops",
            ops.non_canonical,
        ),
        Kind(
            "oversized-frame",
            "sync frames over 1 MiB, gossip messages over 256 KiB, ops over 64 KiB",
            20,
            1_000,
            "frames+messages",
            wire.oversized_frame,
        ),
        Kind(
            "truncated-frame",
            "sync streams that end inside a frame or a length prefix, cut "
            "sync messages, cut gossip messages",
            30,
            1_000,
            "streams+messages",
            wire.truncated_frame,
        ),
        Kind(
            "equivocation",
            "a compromised member signs two different ops with the same seq, then more on one fork",
            10,
            1_000,
            "ops",
            ops.equivocation,
        ),
        Kind(
            "missing-deps",
            "ops whose deps do not exist, and ops that depend on a rejected op",
            100,
            10_000,
            "ops",
            ops.missing_deps,
        ),
        Kind(
            "pending-flood",
            "thousands of signed ops by strangers with deps that never arrive "
            "(pending buffer pressure)",
            20_000,
            200_000,
            "ops",
            ops.pending_flood,
        ),
        Kind(
            "unauthorized-attest",
            "fix attestations signed by a member that is no verifier",
            50,
            10_000,
            "ops",
            ops.unauthorized_attest,
        ),
        Kind(
            "revoked-key",
            "node-0 revokes a member's key; the key signs ops after the revoke "
            "and concurrently with it",
            50,
            10_000,
            "ops",
            ops.revoked_key,
        ),
        Kind(
            "spam-reports",
            "a compromised member reports one pattern over and over, a billion failures each time",
            1_000,
            20_000,
            "ops",
            ops.spam_reports,
        ),
        Kind(
            "junk-gossip",
            "garbage on the network's gossip topic, as fast as we can publish",
            2_000,
            100_000,
            "messages",
            wire.junk_gossip,
        ),
        Kind(
            "reconnect-flood",
            "connect to a node and drop the connection, over and over",
            100,
            10_000,
            "connections",
            wire.reconnect_flood,
        ),
        Kind(
            "slow-sync",
            "sync streams that say hello then stall, many at once (one keeps its "
            "session alive with empty frames)",
            16,
            256,
            "streams",
            wire.slow_sync,
        ),
    )
}


@dataclass
class Outcome:
    """One expectation on the honest nodes and how far each got."""

    key: str
    nodes: str
    count: int
    seen: dict[str, int]
    met: bool


@dataclass
class Result:
    kind: str
    target: str
    count: int
    sent: dict[str, Any]
    details: dict[str, Any]
    expected: list[Outcome]
    time_to_reject_s: float | None
    nodes: dict[str, dict[str, Any]]
    serving: bool
    honest: dict[str, float | None]  # "during"/"after" -> seconds to reach every node
    roots_equal: bool
    converge_s: float | None
    leaked: dict[str, dict[str, int]]  # target-only rejections seen elsewhere
    checks: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Every node served, honest ops spread, roots equal, rejections counted, no leak."""
        propagated = all(v is not None for v in self.honest.values())
        expected = all(o.met for o in self.expected)
        return self.serving and propagated and self.roots_equal and expected and not self.leaked

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["ok"] = self.ok
        return doc


def _seen(e: Expect, before: NodeView, now: NodeView) -> int:
    if e.where == "gossip":
        d = delta(before.gossip_rejected, now.gossip_rejected)
        return (
            sum(v for k, v in d.items() if k != "empty") if e.reason == "*" else d.get(e.reason, 0)
        )
    if e.where == "ingest":
        return delta(before.rejected_by_reason, now.rejected_by_reason).get(e.reason, 0)
    if e.where == "sync":
        return int(now.sync.get(e.reason, 0)) - int(before.sync.get(e.reason, 0))
    if e.where == "sync_failed":
        by = "failed_by_reason"
        return delta(before.sync.get(by, {}), now.sync.get(by, {})).get(e.reason, 0)
    if e.where == "sync_guarded":  # failed for one of these reasons, or refused: penalized
        failed = delta(
            before.sync.get("failed_by_reason", {}), now.sync.get("failed_by_reason", {})
        )
        refused = int(now.sync.get("refused_penalized", 0)) - int(
            before.sync.get("refused_penalized", 0)
        )
        return sum(failed.get(r, 0) for r in e.reason.split("|")) + refused
    if e.where == "pending":
        evicted = now.pending_evicted - before.pending_evicted
        return now.pending - before.pending + evicted
    raise ConfigError(f"unknown expectation {e.where!r}")


def _outcomes(
    expect: list[Expect], target: str, before: dict[str, NodeView], now: dict[str, NodeView]
) -> list[Outcome]:
    out = []
    for e in expect:
        names = [target] if e.nodes == "target" else list(now)
        seen = {n: _seen(e, before[n], now[n]) for n in names}
        out.append(
            Outcome(e.key(), e.nodes, e.count, seen, all(v >= e.count for v in seen.values()))
        )
    return out


def _leaks(
    expect: list[Expect], target: str, before: dict[str, NodeView], now: dict[str, NodeView]
) -> dict[str, dict[str, int]]:
    """Rejections that only the target should have made, seen on another node: junk
    that was forwarded (gossip) or re-sent (ingest)."""
    out: dict[str, dict[str, int]] = {}
    for e in expect:
        if e.nodes != "target" or e.where not in ("gossip", "ingest"):
            continue
        for name, view_now in now.items():
            if name == target:
                continue
            n = _seen(e, before[name], view_now)
            if n:
                out.setdefault(name, {})[e.key()] = n
    return out


def _node_report(b: NodeView, a: NodeView) -> dict[str, Any]:
    """One node: what changed during the attack (counters as deltas), the counters'
    totals before and after, and before/after pairs of the gauges."""
    sync_keys = ("sessions", "completed", "failed", "refused", "bytes_received", "bytes_sent")
    return {
        "serving": a.serving,
        "error": a.error,
        "pid": a.pid,
        "rejected_by_reason": delta(b.rejected_by_reason, a.rejected_by_reason),
        # "empty": our own warm-up probes (see Hostile.warm_up), not the attack
        "gossip_rejected": {
            k: v for k, v in delta(b.gossip_rejected, a.gossip_rejected).items() if k != "empty"
        },
        "gossip_accepted": a.gossip_accepted - b.gossip_accepted,
        "totals_before": {
            "rejected_by_reason": b.rejected_by_reason,
            "gossip_rejected": b.gossip_rejected,
            "sync_failed_by_reason": b.sync.get("failed_by_reason", {}),
        },
        "totals_after": {
            "rejected_by_reason": a.rejected_by_reason,
            "gossip_rejected": a.gossip_rejected,
            "sync_failed_by_reason": a.sync.get("failed_by_reason", {}),
        },
        "sync": {k: int(a.sync.get(k, 0)) - int(b.sync.get(k, 0)) for k in sync_keys},
        "sync_failed_by_reason": delta(
            b.sync.get("failed_by_reason", {}), a.sync.get("failed_by_reason", {})
        ),
        "pending": [b.pending, a.pending],
        "pending_evicted": a.pending_evicted - b.pending_evicted,
        "rejected": [b.rejected, a.rejected],
        "ops": [b.ops, a.ops],
        "root": a.root,
        "rss_kib": [b.rss_kib, a.rss_kib],
        "hwm_kib": [b.hwm_kib, a.hwm_kib],
    }


def honest_nodes(tn: Testnet) -> list[str]:
    """Running nodes that are not spares (spares hold the compromised keys)."""
    st = tn.state()
    return [n.name for n in st.nodes if not n.spare and tn.alive(st.proc_of(n))]


def _write_honest(tn: Testnet, writer: str, when: str) -> bytes:
    tag = os.urandom(4).hex()
    body = sample_report(template=f"honest {when} {tag} failed after <*> ms")
    return NodeApi.of(tn, writer).write("pattern.report", body)


async def _write_during(h: Hostile, writer: str, out: list[bytes]) -> None:
    await trio.sleep(HONEST_DELAY)
    out.append(await h.ask(_write_honest, h.tn, writer, "during"))


async def attack(
    tn: Testnet,
    kind: str,
    count: int | None = None,
    target: str | None = None,
    *,
    settle: float = SETTLE,
) -> Result:
    """Run one attack against the running testnet ``tn``; see the module docstring."""
    if kind not in KINDS:
        raise ConfigError(f"unknown attack {kind!r}; one of: {', '.join(KINDS)}")
    k = KINDS[kind]
    n = k.default if count is None else count
    if not 1 <= n <= k.limit:
        raise ConfigError(f"{kind}: count must be between 1 and {k.limit}")
    honest = honest_nodes(tn)
    if len(honest) < 2:
        raise ConfigError("attacks need a running testnet of at least two nodes")
    # a name or an index (`--target 2`), as every other testnet command takes
    target = tn.node(target).name if target else (honest[1] if honest[0] == "node-0" else honest[0])
    if target not in honest:
        raise ConfigError(
            f"target {target} is not a running node of this testnet (spares are not "
            f"targets; running: {', '.join(honest)})"
        )
    writer = next(x for x in reversed(honest) if x != target)
    start = time.monotonic()
    async with open_hostile(tn, [target]) as h:
        before = await h.ask(views, tn, honest)
        t0 = time.monotonic()
        written: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write_during, h, writer, written)
            sent = await k.run(h, n)
        sent.seconds = round(time.monotonic() - t0, 3)
        serving = True
        now = before
        ttr: float | None = None
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            now = await h.ask(views, tn, honest)
            serving = serving and all(v.serving for v in now.values())
            if all(o.met for o in _outcomes(sent.expect, target, before, now)):
                ttr = round(time.monotonic() - t0, 3)
                break
            await trio.sleep(0.1)
        written.append(await h.ask(_write_honest, tn, writer, "after"))
        honest_s: dict[str, float | None] = {}
        for label, op_id in zip(("during", "after"), written, strict=True):
            spread = await h.ask(
                wait_for, lambda i=op_id: all(has_op(tn, x, i) for x in honest), settle
            )
            honest_s[label] = None if spread is None else round(spread, 3)
        converge = await h.ask(wait_for, lambda: one_root(tn, honest), settle)
        after = await h.ask(views, tn, honest)
        checks = await h.ask(sent.check, tn, honest) if sent.check else {}
    serving = serving and all(v.serving for v in after.values())
    rate = sent.ops or sent.messages or sent.frames
    return Result(
        kind=kind,
        target=target,
        count=n,
        sent={
            "ops": sent.ops,
            "messages": sent.messages,
            "frames": sent.frames,
            "bytes": sent.bytes,
            "seconds": sent.seconds,
            "per_second": round(rate / sent.seconds, 1) if sent.seconds else None,
        },
        details=sent.details,
        expected=_outcomes(sent.expect, target, before, after),
        time_to_reject_s=ttr if sent.expect else None,
        nodes={x: _node_report(before[x], after[x]) for x in honest},
        serving=serving,
        honest=honest_s,
        roots_equal=one_root(tn, honest),
        converge_s=None if converge is None else round(converge, 3),
        leaked=_leaks(sent.expect, target, before, after),
        checks=checks,
        duration_s=round(time.monotonic() - start, 3),
    )


def run(tn: Testnet, kind: str, count: int | None = None, target: str | None = None) -> Result:
    """:func:`attack` from synchronous code (the CLI)."""
    if not tn.exists():
        raise ConfigError(f"no testnet in {tn.run_dir}; start one with `gossipmind testnet up`")
    result: Result = trio.run(attack, tn, kind, count, target)
    return result
