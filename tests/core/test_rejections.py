"""Every kind of bad op is rejected with a specific reason and changes nothing."""

from __future__ import annotations

import msgpack
import pytest

from gossipmind.core import encoding
from gossipmind.core import ops as opsmod
from gossipmind.core.errors import InvalidOp
from gossipmind.core.ops import Op
from gossipmind.core.replica import Replica
from gossipmind.core.snapshot import snapshot
from gossipmind.testing import KB, sample_recipe, sample_report


@pytest.fixture
def kb() -> KB:
    kb = KB(seed=1)
    kb.grant("admin", "agent", "member")
    kb.grant("admin", "v-search", "verifier", tier=1, scopes=("search",))
    kb.grant("admin", "v-old", "verifier", tier=2, scopes=("*",))
    kb.revoke("admin", "v-old")
    for name in ("agent", "v-search", "v-old", "stranger"):
        kb.sync("admin", name)
    kb.report("agent")
    kb.sync("agent", "admin")
    kb.baseline = list(kb.ops)  # type: ignore[attr-defined]
    return kb


def fresh(kb: KB) -> Replica:
    """A replica holding the fixture's valid history (not the ops forged since)."""
    r = Replica(kb.genesis)
    for op in kb.baseline[1:]:  # type: ignore[attr-defined]
        assert r.ingest(op).applied
    return r


def assert_rejected(kb: KB, raw: bytes, code: str) -> None:
    r = fresh(kb)
    before = snapshot(r)
    result = r.ingest_raw(raw)
    assert not result.applied
    assert [c for _, c, _ in result.rejected] == [code], result.rejected
    assert snapshot(r) == before
    # the same junk again is recognised without being re-verified
    again = r.ingest_raw(raw)
    assert not again.applied


def resign(op: Op, **changes: object) -> bytes:
    """Re-encode ``op`` with changed envelope fields, keeping the old signature."""
    fields = [
        1,
        op.net,
        op.kind,
        op.author,
        op.seq,
        op.lamport,
        list(op.deps),
        op.ts,
        op.body,
        op.sig,
    ]
    names = ["v", "net", "kind", "author", "seq", "lamport", "deps", "ts", "body", "sig"]
    for key, value in changes.items():
        fields[names.index(key)] = value
    return encoding.encode(fields)


def test_forged_signature(kb: KB) -> None:
    op = kb.forge("agent", "pattern.report", sample_report(count=3))
    assert_rejected(kb, resign(op, body=sample_report(count=4)), "signature")
    assert_rejected(kb, resign(op, sig=bytes(64)), "signature")


def test_wrong_network(kb: KB) -> None:
    other = KB(seed=2)
    other.grant("admin", "agent", "member")
    other.sync("admin", "agent")
    op = other.write("agent", "pattern.report", sample_report())
    assert_rejected(kb, op.raw, "wrong_network")


def test_non_canonical_encoding(kb: KB) -> None:
    op = kb.forge("agent", "pattern.report", sample_report())
    doc = msgpack.unpackb(op.raw, raw=False)
    doc[8] = dict(reversed(list(doc[8].items())))  # body keys out of order
    raw = msgpack.packb(doc, use_bin_type=True)
    assert raw != op.raw
    assert_rejected(kb, raw, "encoding")


def test_oversized_op(kb: KB) -> None:
    body = sample_report()
    body["template"] = "x" * 70_000
    op = kb.forge("agent", "pattern.report", {"k": 1})
    assert_rejected(kb, resign(op, body=body), "oversized")


def test_unknown_kind(kb: KB) -> None:
    op = kb.forge("agent", "pattern.report", sample_report())
    assert_rejected(kb, resign(op, kind="pattern.delete"), "unknown_kind")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("count"),
        lambda b: b.update(count=0),
        lambda b: b.update(error_class="cosmic_rays"),
        lambda b: b.update(extra=1),
        lambda b: b.update(pattern=bytes(32)),
        lambda b: b["stats"].update(status={"abc": 1}),
    ],
)
def test_malformed_body(kb: KB, mutate: object) -> None:
    body = sample_report()
    mutate(body)  # type: ignore[operator]
    op = kb.forge("agent", "pattern.report", body)
    assert_rejected(kb, op.raw, "schema")


def test_malformed_body_reason_names_the_field(kb: KB) -> None:
    body = sample_report()
    body["stats"]["latency_n"] = -1
    r = fresh(kb)
    result = r.ingest(kb.forge("agent", "pattern.report", body))
    assert "stats.latency_n" in result.rejected[0][2]


def test_seq_gap(kb: KB) -> None:
    r = kb.replica("agent")
    last = r.last_seq[kb.key("agent")]
    op = kb.forge("agent", "pattern.report", sample_report(), seq=last + 2)
    assert_rejected(kb, op.raw, "seq_gap")


def test_wrong_lamport(kb: KB) -> None:
    op = kb.forge("agent", "pattern.report", sample_report())
    raw = opsmod.create(
        kb.identity("agent"),
        net=op.net,
        kind=op.kind,
        seq=op.seq,
        lamport=op.lamport + 5,
        deps=op.deps,
        ts=op.ts,
        body=op.body,
    ).raw
    assert_rejected(kb, raw, "lamport")


def _attest(kb: KB, who: str, scope: str = "search") -> bytes:
    fix = bytes(32)
    return kb.forge(who, "fix.attest", kb.attest_body(fix, scope)).raw


def test_attestation_by_a_non_verifier(kb: KB) -> None:
    assert_rejected(kb, _attest(kb, "agent"), "not_verifier")


def test_attestation_by_a_stranger(kb: KB) -> None:
    assert_rejected(kb, _attest(kb, "stranger"), "not_verifier")


def test_attestation_out_of_scope(kb: KB) -> None:
    assert_rejected(kb, _attest(kb, "v-search", scope="payments"), "out_of_scope")


def test_attestation_by_a_revoked_verifier(kb: KB) -> None:
    assert_rejected(kb, _attest(kb, "v-old"), "revoked")


def test_report_by_a_non_member(kb: KB) -> None:
    assert_rejected(kb, kb.forge("stranger", "pattern.report", sample_report()).raw, "not_member")


def test_grant_by_a_non_admin(kb: KB) -> None:
    body = {"member": kb.key("stranger"), "role": "admin"}
    assert_rejected(kb, kb.forge("agent", "member.grant", body).raw, "unauthorized")


def test_second_genesis(kb: KB) -> None:
    other = KB(seed=1, name="again")
    assert_rejected(kb, other.genesis.raw, "wrong_network")


def test_garbage_bytes(kb: KB) -> None:
    assert_rejected(kb, encoding.encode([1, 2, 3]), "envelope")
    assert_rejected(kb, b"\x93\x01\x02", "encoding")  # truncated
    assert_rejected(kb, b"not msgpack at all", "encoding")


def test_depending_on_a_rejected_op_is_rejected(kb: KB) -> None:
    r = fresh(kb)
    bad = kb.forge("stranger", "pattern.report", sample_report())
    r.ingest(bad)
    child = opsmod.create(
        kb.identity("stranger"),
        net=kb.net,
        kind="pattern.report",
        seq=2,
        lamport=bad.lamport + 1,
        deps=[bad.id],
        ts=1,
        body=sample_report(),
    )
    before = snapshot(r)
    result = r.ingest(child)
    assert result.rejected[0][1] == "invalid_dep"
    assert snapshot(r) == before


def test_create_refuses_an_invalid_op_and_changes_nothing(kb: KB) -> None:
    r = kb.replica("agent")
    before = snapshot(r)
    with pytest.raises(InvalidOp, match="not_verifier"):
        r.create(kb.identity("agent"), "fix.attest", kb.attest_body(bytes(32), "search"), 1)
    assert snapshot(r) == before
    assert not r.rejected


def test_create_runs_the_envelope_checks_of_every_peer(kb: KB) -> None:
    """``ops.create`` skips the canonical re-check of bytes it just encoded, not the
    envelope checks: what a peer's decode would refuse, create refuses too."""
    agent = kb.identity("agent")
    args = {"net": kb.net, "kind": "pattern.report", "lamport": 9, "deps": [bytes(32)]}
    with pytest.raises(InvalidOp) as exc:
        opsmod.create(agent, seq=1, ts=-1, body=sample_report(), **args)  # type: ignore[arg-type]
    assert exc.value.code == "envelope" and "ts" in exc.value.detail
    with pytest.raises(InvalidOp) as exc:
        opsmod.create(agent, seq=0, ts=1, body=sample_report(), **args)  # type: ignore[arg-type]
    assert exc.value.code == "envelope" and "seq" in exc.value.detail


def test_a_created_op_is_the_op_its_bytes_decode_to(kb: KB) -> None:
    """A body given with tuples, bytearrays and unsorted keys is signed in its
    canonical form, and the Op returned is equal to ``decode`` of its bytes."""
    body = sample_report()
    body = dict(reversed(list(body.items())))
    body["pattern"] = bytearray(body["pattern"])
    body["window"] = tuple(body["window"])
    r = kb.replica("agent")
    op = r.create(kb.identity("agent"), "pattern.report", body, 5)
    assert opsmod.decode(op.raw) == op
    assert type(op.body["pattern"]) is bytes and op.body["window"] == [0, 1000]
    assert list(op.body) == sorted(op.body)
    assert op.id in r.meta and r.heads == {op.id} and op.verify_signature()


def test_recipe_bounds_are_enforced(kb: KB) -> None:
    recipe = sample_recipe()
    recipe["steps"][0]["max_attempts"] = 1000
    body = {
        "pattern": bytes(32),
        "recipe": recipe,
        "risk": "low",
        "rationale": "",
        "origin": "synth",
    }
    r = fresh(kb)
    result = r.ingest(kb.forge("agent", "fix.propose", body))
    assert result.rejected[0][1] == "schema"
    assert "recipe.steps[0].max_attempts" in result.rejected[0][2]


def test_status_codes_are_ascii_digits(kb: KB) -> None:
    body = sample_report()
    body["stats"]["status"] = {"²²²": 1}
    r = fresh(kb)
    result = r.ingest(kb.forge("agent", "pattern.report", body))
    assert result.rejected[0][1] == "schema" and "3-digit" in result.rejected[0][2]


def signed_raw(kb: KB, name: str, **changes: object) -> bytes:
    """A correctly signed op of ``name`` on ``fresh``'s state with changed envelope
    fields: what a hostile member's own code could send (``create`` refuses it)."""
    r, ident = fresh(kb), kb.identity(name)
    fields: dict[str, object] = {
        "v": 1,
        "net": r.net,
        "kind": "pattern.report",
        "author": ident.public,
        "seq": r.last_seq.get(ident.public, 0) + 1,
        "lamport": 1 + max(r.meta[h].lamport for h in r.heads),
        "deps": sorted(r.heads),
        "ts": 1,
        "body": sample_report(),
    }
    fields.update(changes)
    envelope = list(fields.values())
    sig = kb.identity(name).sign(opsmod.SIGNATURE_DOMAIN + encoding.encode(envelope))
    return encoding.encode([*envelope, sig])


@pytest.mark.parametrize(
    ("field", "value"),
    [("ts", 2**63), ("ts", opsmod.MAX_TS + 1), ("ts", 2**64 - 1), ("lamport", 2**63)],
)
def test_envelope_integers_past_their_range_are_refused(kb: KB, field: str, value: int) -> None:
    """A ts SQLite cannot hold (>= 2**63) was applied, then crashed the store's write
    on every node that received it, again after every restart; one past year 9999
    crashed the CLI's tables. Every replica now refuses both, the same way."""
    assert_rejected(kb, signed_raw(kb, "agent", **{field: value}), "envelope")
    assert fresh(kb).ingest_raw(signed_raw(kb, "agent", ts=opsmod.MAX_TS)).applied


def test_an_equivocating_key_signs_nothing_more(kb: KB) -> None:
    """A node whose key was flagged as an equivocator (a store restored from an old
    backup with no peer answering, or the key on two nodes) went on signing: its
    agents' reports and CLI writes were acknowledged, and every one was void."""
    first = kb.write("agent", "pattern.report", sample_report(count=2))
    fork = kb.forge("agent", "pattern.report", sample_report(count=3), seq=first.seq)
    r = kb.replica("agent")
    assert r.ingest(fork).applied and kb.key("agent") in r.membership.equivocators
    before = snapshot(r)
    with pytest.raises(InvalidOp) as err:
        kb.write("agent", "pattern.report", sample_report(count=4))
    assert err.value.code == "equivocating"
    assert snapshot(r) == before
