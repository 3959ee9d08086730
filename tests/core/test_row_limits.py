"""What the fold materialises must fit a row: no integer past 2^63 - 1, no value
nested deeper than the encoder allows (protocol.md §2, §6.4, §6.5).

A row that cannot be encoded fails the store's write: the store is marked
broken, the node stops, and it stops again after each restart as soon as sync
brings the op back. Valid ops made two such rows: 2 049 reports whose latency
average came to 2^64 (18 455 751 272 964 292 608), and one attestation whose
evidence nested to the op's depth limit (one level deeper in the fix row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gossipmind.core import encoding
from gossipmind.core import snapshot as snapshot_module
from gossipmind.core.fold import OUTCOME_CAP, PatternAgg
from gossipmind.core.schema import pattern_id
from gossipmind.core.snapshot import fix_row, pattern_row, snapshot
from gossipmind.store.doctor import diagnose
from gossipmind.store.queries import Reader
from gossipmind.store.sqlite import Store
from gossipmind.testing import KB, sample_recipe, sample_report

BATCH = 500  # ops per Store.ingest, as gossip and sync batches bring them
ROW_INT_MAX = 2**63 - 1  # SQLite INTEGER: where row integers saturate


def ingest_all(path: Path, kb: KB) -> None:
    with Store.create(path, kb.genesis, synchronous="OFF") as store:
        ops = kb.ops[1:]
        for i in range(0, len(ops), BATCH):
            store.ingest(ops[i : i + BATCH], verified=True)
        assert store.broken is None
        assert len(store.replica.meta) == len(kb.ops)


def test_a_latency_average_past_2_63_saturates(tmp_path: Path) -> None:
    """2 049 valid reports by one member: latency_ms_sum = 2^53 each (the schema's
    maximum), latency_n = 1 in the first and 0 in the rest."""
    kb = KB(seed=3)
    kb.grant("admin", "a", "member")
    kb.sync("admin", "a")
    for i in range(2049):
        body = sample_report(count=1)
        body["stats"]["latency_ms_sum"] = 2**53
        body["stats"]["latency_n"] = 1 if i == 0 else 0
        kb.write("a", "pattern.report", body)
    path = tmp_path / "kb.sqlite3"
    ingest_all(path, kb)
    with Reader(path) as reader:
        (row,) = reader.patterns()
    assert 2049 * 2**53 > 2**64 - 1  # the exact average does not fit even the encoding
    assert row["latency_ms_avg"] == ROW_INT_MAX == 2**63 - 1
    assert (row["latency_n"], row["count"]) == (1, 2049)
    with Store.open(path) as store:  # a restart replays them and writes the rows again
        assert snapshot(store.replica)["patterns"] == [row]
        more = sample_report(count=1)
        store.create_op(kb.identity("admin"), "pattern.report", more, 99)
        assert store.broken is None
    assert diagnose(path).healthy


def test_every_summed_integer_in_a_row_saturates() -> None:
    """Sums no test can reach by ops (2^63 failures): each figure of a pattern row
    and a fix row stops at 2^63 - 1, and the rows encode."""
    huge = 2**70
    p = PatternAgg(b"p" * 32, "s", "o", "timeout", "t", "{}", (1, b""))
    p.per_author = {b"a" * 32: [huge, huge, 1, 5, huge], b"b" * 32: [huge, 0, 0, 7, huge]}
    p.status = {"504": huge}
    row = pattern_row(p, 2)
    assert row["count"] == row["latency_ms_avg"] == row["retry_after_n"] == ROW_INT_MAX
    assert row["status"] == {"504": ROW_INT_MAX} and row["latency_n"] == 1
    assert row["retry_after_ms_max"] == 7
    encoding.encode(row)

    kb = KB(seed=5)
    kb.grant("admin", "a", "member")
    kb.sync("admin", "a")
    pat = pattern_id("search", "query", "timeout", "t")
    fid = kb.propose("a", pat, sample_recipe("search"))
    r = kb.replica("a")
    r.fold.fixes[fid].outcomes = {b"a" * 32: [huge, huge], b"b" * 32: [huge, 3]}
    got = fix_row(r, r.fold.fixes[fid])
    assert got is not None
    # the rate weighs each author at most OUTCOME_CAP attempts (protocol.md §6.5): the
    # weighted sums stay small; the raw per-author counters saturate
    assert (got["attempts"], got["successes"]) == (2 * OUTCOME_CAP, OUTCOME_CAP)
    assert [o[1:] for o in got["outcomes"]] == [[ROW_INT_MAX, ROW_INT_MAX], [ROW_INT_MAX, 3]]
    encoding.encode(got)
    assert snapshot_module.ROW_INT_MAX == ROW_INT_MAX


def nested(levels: int) -> Any:
    """A map holding arrays nested so that the map and they make ``levels`` levels."""
    deep: Any = []
    for _ in range(levels - 2):
        deep = [deep]
    return {"x": deep}


def deep_history() -> tuple[KB, bytes, dict[str, Any], dict[str, Any]]:
    """An attestation whose evidence, and a proposal whose drill model, nest to the
    op's limit: op (1) > body (2) > evidence (3) ... level 32; op > body > drill >
    model (4) ... level 32."""
    kb = KB(seed=4)
    kb.grant("admin", "a", "member")
    kb.grant("admin", "v", "verifier", tier=1, scopes=("search",))
    kb.sync("admin", "a")
    kb.sync("admin", "v")
    pat = kb.report("a", template="t").body["pattern"]  # a fix needs its pattern's scope
    assert pat == pattern_id("search", "query", "timeout", "t")
    evidence, model = nested(30), nested(29)
    drill = {
        "runs": 10,
        "success_bp": 9000,
        "baseline_success_bp": 1000,
        "amplification_pm": 1000,
        "added_latency_ms": 0,
        "model": model,
    }
    body = {
        "pattern": pat,
        "recipe": sample_recipe("search.query"),
        "risk": "low",
        "rationale": "deep",
        "origin": "synth",
        "drill": drill,
    }
    propose = kb.write("a", "fix.propose", body)
    fid = next(iter(kb.replica("a").fold.fixes))
    kb.sync("a", "v")
    attest = kb.write("v", "fix.attest", kb.attest_body(fid, "search") | {"evidence": evidence})
    assert encoding.decode(attest.raw) and encoding.decode(propose.raw)  # valid, at the limit
    return kb, fid, evidence, model


def test_evidence_nested_to_the_op_limit_fits_the_fix_row(tmp_path: Path) -> None:
    kb, fid, evidence, model = deep_history()
    path = tmp_path / "kb.sqlite3"
    ingest_all(path, kb)
    with Reader(path) as reader:
        (row,) = reader.fixes()
    assert row["fix"] == fid and row["status"] == "accepted"
    (att,) = row["attestations"]
    assert att["evidence"] == encoding.encode(evidence)  # held encoded: one level too deep
    assert row["drill"]["model"] == model  # shallower in the row than in the op: as it is
    assert diagnose(path).healthy
    with Store.open(path) as store:
        assert snapshot(store.replica)["fixes"] == [row]


def test_evidence_that_fits_stays_a_map() -> None:
    kb, fid, _, _ = deep_history()
    kb.sync("a", "v")
    kb.write("v", "fix.attest", kb.attest_body(fid, "search") | {"evidence": nested(29)})
    r = kb.replica("v")
    got = fix_row(r, r.fold.fixes[fid])
    assert got is not None
    (att,) = got["attestations"]  # the verifier's latest verdict
    assert att["evidence"] == nested(29)
    encoding.encode(got)
