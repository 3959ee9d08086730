"""Attacks with ops: forged, replayed, malleable, forked, dangling, unauthorized,
revoked, and valid-but-abusive ones (see :mod:`.attack`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from gossipmind.core import encoding
from gossipmind.core.dag import DEFAULT_MAX_OPS
from gossipmind.core.identity import Identity
from gossipmind.core.ops import Op
from gossipmind.core.policy import Policy
from gossipmind.core.replica import Replica, create_genesis
from gossipmind.core.schema import MAX_COUNTER
from gossipmind.net.gossip import encode_batch
from gossipmind.store.datadir import DataDir
from gossipmind.store.queries import Reader
from gossipmind.testing import sample_report
from gossipmind.testnet.attack_peer import Expect, Hostile, now_ms
from gossipmind.testnet.attack_peer import Sent as Did
from gossipmind.testnet.attack_probe import NodeApi
from gossipmind.testnet.attack_wire import push_sync
from gossipmind.testnet.launcher import Testnet

REVOKE_VISIBLE_TIMEOUT = 30.0


def _report(tag: str, i: int = 0, count: int = 1) -> dict[str, Any]:
    return sample_report(template=f"attack {tag} {i} failed after <*> ms", count=count)


def _tag() -> str:
    return os.urandom(4).hex()


def _envelope(op: Op) -> list[Any]:
    return [1, op.net, op.kind, op.author, op.seq, op.lamport, list(op.deps), op.ts, op.body]


def _reencode(op: Op, *, author: bytes | None = None, sig: bytes | None = None) -> bytes:
    env = _envelope(op)
    if author is not None:
        env[3] = author
    return encoding.encode([*env, op.sig if sig is None else sig])


def _store(tn: Testnet, name: str) -> Reader:
    return Reader(DataDir(Path(tn.node(name).dir)).store)


async def _gossip_each(h: Hostile, raws: list[bytes], did: Did) -> int:
    """One op per gossip message (the validator judges, and counts, messages)."""
    for raw in raws:
        data = encode_batch([raw])
        await h.publish(data)
        did.bytes += len(data)
    did.messages += len(raws)
    did.ops += len(raws)
    return len(raws)


def _halves(count: int) -> tuple[int, int]:
    return (count + 1) // 2, count // 2


# -- invalid ops ---------------------------------------------------------------------------


async def forged_signature(h: Hostile, count: int) -> Did:
    """Ops that claim an author who did not sign them: grants of admin "by node-0"
    and reports "by" honest members, half by gossip, half through a sync session."""
    did = Did()
    r = h.store.replica
    admin = h.tn.node("node-0")
    victims = [bytes.fromhex(n.key) for n in h.tn.state().nodes if not n.spare]
    forger = Identity(os.urandom(32))
    raws: list[bytes] = []
    for i in range(count):
        victim = bytes.fromhex(admin.key) if i % 2 == 0 else victims[i % len(victims)]
        if i % 2 == 0:
            body: dict[str, Any] = {"member": forger.public, "role": "admin", "name": f"owned {i}"}
            op = h.forge(forger, "member.grant", body, seq=r.last_seq.get(victim, 0) + 1)
        else:
            op = h.forge(forger, "pattern.report", _report("forged", i))
        raws.append(_reencode(op, author=victim))  # signed by the forger, claims the victim
    by_gossip, by_sync = _halves(count)
    await _gossip_each(h, raws[:by_gossip], did)
    await push_sync(h, raws[by_gossip:], did)
    did.expect = [
        Expect("gossip", "signature", by_gossip),
        Expect("ingest", "signature", by_sync),
    ]
    return did


async def replay(h: Hostile, count: int) -> Did:
    """Valid ops of another network (its genesis, grants, reports) replayed here, and
    this network's own ops replayed (duplicates: dropped unverified)."""
    did = Did()
    other = Identity(os.urandom(32))
    genesis = create_genesis(other, "elsewhere", Policy(), os.urandom(16), now_ms())
    replica = Replica(genesis)
    tag = _tag()
    foreign = [genesis.raw]
    while len(foreign) < count:
        foreign.append(replica.create(other, "pattern.report", _report(tag, len(foreign)), 1).raw)
    by_gossip, by_sync = _halves(count)
    await _gossip_each(h, foreign[:by_gossip], did)
    await push_sync(h, foreign[by_gossip:], did)
    own = [raw for _, raw in h.store.iter_raw(0, 200)]
    data = encode_batch(own)
    await h.publish(data)
    did.messages += 1
    did.bytes += len(data)
    did.details = {"own_ops_replayed": len(own)}
    did.expect = [
        Expect("gossip", "wrong_network", by_gossip),
        Expect("ingest", "wrong_network", by_sync),
    ]
    return did


def _map_unsorted(doc: dict[str, Any]) -> bytes:
    keys = sorted(doc, key=lambda k: k.encode())[::-1]
    head = bytes([0x80 | len(keys)]) if len(keys) < 16 else b"\xde" + len(keys).to_bytes(2, "big")
    return head + b"".join(encoding.encode(k) + encoding.encode(doc[k]) for k in keys)


def noncanonical(raw: bytes, variant: int) -> bytes:
    """The same op (same signature) in another msgpack encoding: a different id."""
    fields = encoding.decode(raw)
    parts = [encoding.encode(x) for x in fields]
    v = variant % 4
    if v == 0:  # version 1 as uint8 instead of a fixint
        parts[0] = b"\xcc\x01"
    elif v == 1:  # kind as str8 instead of fixstr
        kind = fields[2].encode()
        parts[2] = b"\xd9" + bytes([len(kind)]) + kind
    elif v == 2:  # signature as bin16 instead of bin8
        parts[9] = b"\xc5\x00\x40" + fields[9]
    elif len(fields[8]) > 1:  # body keys out of order
        parts[8] = _map_unsorted(fields[8])
    else:
        parts[5] = b"\xcf" + fields[5].to_bytes(8, "big")  # lamport as uint64
    return b"\x9a" + b"".join(parts)


async def non_canonical(h: Hostile, count: int) -> Did:
    """Honest nodes' real ops re-encoded (valid signatures, new bytes, new ids), and
    gossip messages whose own envelope is not canonical."""
    did = Did()
    real = [raw for _, raw in h.store.iter_raw(1, count)] or [h.store.replica.genesis.raw]
    raws = [noncanonical(real[i % len(real)], i) for i in range(count)]
    by_gossip, by_sync = _halves(count)
    envelopes = max(1, by_gossip // 4)
    ops_each = by_gossip - envelopes
    await _gossip_each(h, raws[:ops_each], did)
    for i in range(envelopes):  # canonical ops in a non-canonical array (array16 header)
        item = encoding.encode(real[i % len(real)])
        data = b"\xdc\x00\x01" + item
        await h.publish(data)
        did.messages += 1
        did.bytes += len(data)
    await push_sync(h, raws[by_gossip:], did)
    did.expect = [
        Expect("gossip", "op_encoding", ops_each),
        Expect("gossip", "encoding", envelopes),
        Expect("ingest", "encoding", by_sync),
    ]
    return did


# -- causal junk ------------------------------------------------------------------------------


def _pending_held(ids: list[bytes]) -> Any:
    def check(tn: Testnet, names: list[str]) -> dict[str, Any]:
        out = {}
        for name in names:
            with _store(tn, name) as r:
                held = 0
                for i in range(0, len(ids), 500):
                    chunk = ids[i : i + 500]
                    sql = f"SELECT COUNT(*) FROM pending WHERE id IN ({','.join('?' * len(chunk))})"
                    held += r.conn.execute(sql, chunk).fetchone()[0]
            out[name] = held
        return {"dangling_ops_pending": out}

    return check


async def missing_deps(h: Hostile, count: int) -> Did:
    """Ops whose deps do not exist (they wait in the pending buffer), and ops whose
    dep is an op the network rejected (rejected in turn). A cycle of deps cannot be
    built: an op's id hashes its deps, so "cyclic" ops are dangling ops too."""
    did = Did()
    stranger = Identity(os.urandom(32))  # no grant: the validator does not know
    base = h.forge(stranger, "pattern.report", _report("unauthorized-base"))
    on_rejected = max(1, count // 4)
    dangling_n = max(1, count - 1 - on_rejected)
    raws = [base.raw]
    tag = _tag()
    for i in range(on_rejected):
        other = Identity(os.urandom(32))
        deps = sorted({base.id, *sorted(h.store.replica.heads)[:8]})
        op = h.forge(other, "pattern.report", _report(tag, i), seq=1, deps=deps)
        raws.append(op.raw)
    dangling = []
    for i in range(dangling_n):
        op = h.forge(stranger, "pattern.report", _report(tag, i), seq=2 + i, deps=[os.urandom(32)])
        dangling.append(op.id)
        raws.append(op.raw)
    did.messages = await h.publish_ops(raws)
    did.ops = len(raws)
    did.bytes = sum(len(r) for r in raws)
    did.expect = [
        Expect("ingest", "not_member", 1, "all"),
        Expect("ingest", "invalid_dep", on_rejected, "all"),
    ]
    did.details = {"dangling": dangling_n, "on_a_rejected_op": on_rejected}
    did.check = _pending_held(dangling)
    return did


async def pending_flood(h: Hostile, count: int) -> Did:
    """Thousands of well-signed ops by strangers whose deps never arrive."""
    did = Did()
    keys = [Identity(os.urandom(32)) for _ in range(16)]
    raws = []
    for i in range(count):
        op = h.forge(keys[i % 16], "pattern.report", _report("flood", i), deps=[os.urandom(32)])
        raws.append(op.raw)
        if i % 500 == 499:
            await trio.lowlevel.checkpoint()
    did.messages = await h.publish_ops(raws)
    did.ops = count
    did.bytes = sum(len(r) for r in raws)
    # every op that arrives is parked or evicts an older one; gossip may lose a few
    # messages under this load (anti-entropy does not carry pending ops), so only
    # ask for what fills the buffer
    did.expect = [Expect("pending", "", min(count, DEFAULT_MAX_OPS), "all")]
    return did


# -- unauthorized and revoked authors ------------------------------------------------------


async def unauthorized_attest(h: Hostile, count: int) -> Did:
    """A compromised member (not a verifier) attests fixes, real ones if any."""
    did = Did()
    name, member = h.compromised()
    fixes = sorted(h.store.replica.fold.fixes) or []
    raws = []
    for i in range(count):
        fix = fixes[i % len(fixes)] if fixes and i % 2 == 0 else os.urandom(32)
        body = {"fix": fix, "scope": "search", "verdict": "accept", "reasons": [f"trust me {i}"]}
        raws.append(h.forge(member, "fix.attest", body, seq=1).raw)
    did.messages = await h.publish_ops(raws)
    did.ops = count
    did.bytes = sum(len(r) for r in raws)
    did.details = {"author": name, "real_fixes_attested": min(len(fixes), (count + 1) // 2)}
    did.expect = [Expect("ingest", "not_verifier", count, "all")]
    return did


async def revoked_key(h: Hostile, count: int) -> Did:
    """node-0 revokes a spare's key (plain revoke, through its API); the key then
    signs ops on top of the revoke (rejected) and ops concurrent with it (valid
    history, but void: they count for nothing)."""
    did = Did()
    name, key = h.compromised()
    before = sorted(h.store.replica.heads)
    admin = NodeApi.of(h.tn, "node-0")
    body = {"member": key.public, "retroactive": False, "reason": "compromised (testnet attack)"}
    await h.ask(admin.write, "member.revoke", body)
    with trio.fail_after(REVOKE_VISIBLE_TIMEOUT):
        while not h.store.replica.roles(key.public).revoked:
            await trio.sleep(0.3)
            await h.refresh()
    tag = _tag()
    concurrent_n, after_n = _halves(count)
    raws, concurrent = [], []
    r = h.store.replica
    lamport = 1 + max(r.meta[d].lamport for d in before)
    prev: Op | None = None
    for i in range(concurrent_n):
        deps = before if prev is None else [prev.id]
        op = h.forge(key, "pattern.report", _report(tag, i), seq=i + 1, deps=deps, lamport=lamport)
        prev, lamport = op, lamport + 1
        concurrent.append(op.id)
        raws.append(op.raw)
    for i in range(after_n):  # seq 1 again: each is judged on its own (and rejected)
        raws.append(h.forge(key, "pattern.report", _report(tag, 1000 + i), seq=1).raw)
    did.messages = await h.publish_ops(raws)
    did.ops = count
    did.bytes = sum(len(x) for x in raws)
    did.details = {"author": name, "concurrent_with_revoke": concurrent_n, "after": after_n}
    did.expect = [Expect("ingest", "revoked", after_n, "all")]
    pattern = _report(tag)["pattern"]
    did.check = _void_check(key.public, pattern, concurrent)
    return did


def _void_check(author: bytes, pattern: bytes, valid_ids: list[bytes]) -> Any:
    def check(tn: Testnet, names: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in names:
            with _store(tn, name) as r:
                present = sum(
                    1
                    for i in valid_ids
                    if r.conn.execute("SELECT 1 FROM ops WHERE id = ?", (i,)).fetchone()
                )
                counted = [p for p in r.patterns(limit=100_000) if p["pattern"] == pattern]
                member = next((m for m in r.members() if m["key"] == author), {})
            out[name] = {
                "ops_held": present,
                "pattern_count": counted[0]["count"] if counted else 0,
                "revoked": member.get("revoked"),
                "equivocating": member.get("equivocating"),
            }
        return {"author": out}

    return check


# -- compromised members ----------------------------------------------------------------------


async def equivocation(h: Hostile, count: int) -> Did:
    """A compromised member signs two different ops with seq 1 (one by gossip, one
    through a sync session), then more ops on top of one fork."""
    did = Did()
    name, member = h.compromised()
    tag = _tag()
    fork_a = h.forge(member, "pattern.report", _report(tag, 0, count=1), seq=1)
    fork_b = h.forge(member, "pattern.report", _report(tag, 0, count=2), seq=1)
    h.store.ingest([fork_a], verified=True)
    later = []
    for i in range(max(0, count - 2)):
        op = h.forge(member, "pattern.report", _report(tag, i + 1))
        h.store.ingest([op], verified=True)
        later.append(op)
    gossiped = [fork_a.raw, *(o.raw for o in later)]
    did.messages = await h.publish_ops(gossiped)
    did.ops = len(gossiped)
    did.bytes = sum(len(x) for x in gossiped)
    await push_sync(h, [fork_b.raw], did)
    h.store.ingest([fork_b], verified=True)
    did.details = {"author": name, "forks_at_seq": 1, "ops_after_the_fork": len(later)}
    ids = [fork_a.id, fork_b.id, *(o.id for o in later)]
    did.check = _void_check(member.public, fork_a.body["pattern"], ids)
    return did


async def spam_reports(h: Hostile, count: int) -> Did:
    """A compromised member reports one pattern ``count`` times, each report claiming
    a billion failures, to push it over the synthesis threshold."""
    did = Did()
    name, member = h.compromised()
    tag = _tag()
    body = _report(tag, count=MAX_COUNTER)
    body["stats"]["latency_n"] = MAX_COUNTER
    raws = []
    for i in range(count):
        raws.append(h.write(member, "pattern.report", body).raw)
        if i % 200 == 199:
            await trio.lowlevel.checkpoint()
    did.messages = await h.publish_ops(raws)
    did.ops = count
    did.bytes = sum(len(x) for x in raws)
    cap = h.store.replica.policy.report_cap
    did.details = {
        "author": name,
        "claimed_failures": count * MAX_COUNTER,
        "report_cap": cap,
        "synthesis_threshold": h.store.replica.policy.synthesis_threshold,
    }
    did.check = _pattern_check(body["pattern"])
    return did


def _pattern_check(pattern: bytes) -> Any:
    def check(tn: Testnet, names: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in names:
            with _store(tn, name) as r:
                rows = [p for p in r.patterns(limit=100_000) if p["pattern"] == pattern]
                fixes = r.fixes(pattern=pattern)
            row = rows[0] if rows else {}
            out[name] = {
                "count": row.get("count", 0),
                "reporters": row.get("reporters", 0),
                "over_threshold": row.get("over_threshold"),
                "fixes": len(fixes),
            }
        return {"pattern": out}

    return check
