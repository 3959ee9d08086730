"""``GET /v1/metrics``: the node's status in the Prometheus text format, read by
Prometheus's own parser, from real nodes over real libp2p on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from conftest import Running, fleet
from gossipmind.api import metrics
from gossipmind.core import ops as opsmod
from gossipmind.core.errors import InvalidOp
from gossipmind.testing import sample_report

BOUND = 20.0


def get(r: Running, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=r.url, timeout=10) as c:
        return c.get(path, headers=headers)


async def scrape(r: Running) -> tuple[dict[str, Any], dict[str, dict[tuple[Any, ...], float]]]:
    """The status, then the metrics (name -> labels -> value) read right after it."""
    st = (await trio.to_thread.run_sync(get, r, "/v1/status", r.token)).json()
    resp = await trio.to_thread.run_sync(get, r, "/v1/metrics", r.token)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == metrics.CONTENT_TYPE
    out: dict[str, dict[tuple[Any, ...], float]] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return st, out


def value(found: dict[str, dict[tuple[Any, ...], float]], name: str) -> float:
    (v,) = found[name].values()
    return v


async def test_the_metrics_are_the_status_in_prometheus_format(tmp_path: Path) -> None:
    async with fleet(tmp_path, 2, 1, fake=False) as (admin, verifier):
        with trio.fail_after(BOUND):
            while not admin.node.transport.peers():
                await trio.sleep(0.05)
        st, found = await scrape(admin)
        assert value(found, "gossipmind_ops") == st["ops"] >= 1
        assert value(found, "gossipmind_peers") == len(st["peers"]) == 1
        assert value(found, "gossipmind_equivocations") == 0
        assert found["gossipmind_role"] == {(("role", "admin"),): 1.0}
        (labels,) = found["gossipmind_info"]
        assert dict(labels)["network"] == admin.node.net.hex()
        assert dict(labels)["peer_id"] == st["peer_id"]
        for path, kind, _ in metrics.FIELDS:  # every listed field, with its type's name
            assert metrics.metric_name(path, kind) in found, path
        assert "gossipmind_learner_busy_seconds_total" in found  # units spelled out
        # what the node does shows: a write, then the other node's gossip and ops
        before = value(found, "gossipmind_ops")
        await admin.node.write("pattern.report", sample_report(template="metrics <*>"))
        with trio.fail_after(BOUND):
            while verifier.node.status()["ops"] < st["ops"] + 1:
                await trio.sleep(0.05)
        _, after = await scrape(admin)
        assert value(after, "gossipmind_ops") == before + 1
        assert value(after, "gossipmind_ops_written_total") >= 1
        _, seen = await scrape(verifier)
        assert "verifier" in found_role(seen) and "admin" not in found_role(seen)
        assert value(seen, "gossipmind_ops") == before + 1


def found_role(found: dict[str, dict[tuple[Any, ...], float]]) -> set[str]:
    return {dict(labels)["role"] for labels in found.get("gossipmind_role", {})}


async def test_the_metrics_need_the_token(tmp_path: Path) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        assert (await trio.to_thread.run_sync(get, r, "/v1/metrics", None)).status_code == 401
        wrong = "x" * 40
        assert (await trio.to_thread.run_sync(get, r, "/v1/metrics", wrong)).status_code == 401


async def test_every_numeric_field_of_the_status_is_exported_or_named_as_skipped(
    tmp_path: Path,
) -> None:
    """A field added to the status without a metric (or a decision not to) fails here."""
    async with fleet(tmp_path, 2, 1) as (r, v):
        for node in (r, v):
            st = (await trio.to_thread.run_sync(get, node, "/v1/status", node.token)).json()
            paths = set(metrics.numeric_paths(st))
            listed = {p for p, _, _ in metrics.FIELDS} | metrics.SKIPPED
            assert paths - listed == set(), sorted(paths - listed)
            assert {"ops", "sync.sessions", "learner.rounds", "verifier.checked"} <= paths


def test_reasons_with_any_characters_survive_as_labels() -> None:
    odd = {'quote " here': 3, "back\\slash": 2, "new\nline": 1, "plain": 7}
    status = {"network": "ab", "peer_id": 'p"1', "key": "k", "gossip_rejected": odd, "ops": 5}
    text = metrics.render(status)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    rejected = families["gossipmind_gossip_rejected"]
    assert rejected.type == "counter"
    assert {s.labels["reason"]: s.value for s in rejected.samples} == odd
    assert families["gossipmind_info"].samples[0].labels["peer_id"] == 'p"1'
    assert families["gossipmind_ops"].samples[0].value == 5
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(names) == len(set(names))  # each family once


def test_labels_given_go_on_every_sample() -> None:
    """Two nodes' files side by side (node_exporter merges them): each sample of one
    differs from the other's by its ``peer_id`` label, so none collides."""
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for peer in ("peer-a", "peer-b"):
        status = {"network": "ab", "peer_id": peer, "key": "k", "ops": 5, "peers": ["x"],
                  "roles": ["member"], "gossip_rejected": {"bad sig": 1}}  # fmt: skip
        text = metrics.render(status, {"peer_id": peer})
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                assert s.labels["peer_id"] == peer, s
                key = (s.name, tuple(sorted(s.labels.items())))
                assert key not in seen, key
                seen.add(key)
    assert ("gossipmind_ops", (("peer_id", "peer-a"),)) in seen


async def test_a_node_whose_own_key_equivocated_says_so(tmp_path: Path) -> None:
    """A node whose key signed two ops with one seq (a store restored from an old
    backup with no peer answering) still showed its roles and nothing else in its
    status and metrics: `key_equivocating` says it, and the node signs no more."""
    async with fleet(tmp_path, 1, 0) as (r,):
        node = r.node
        st, found = await scrape(r)
        assert st["key_equivocating"] is False
        assert value(found, "gossipmind_key_equivocating") == 0
        first = await node.write("pattern.report", sample_report(template="first <*>"))
        rep = node.store.replica
        deps = sorted(d for d in rep.heads if d != first.id) or list(first.deps)
        fork = opsmod.create(
            node.identity,
            net=rep.net,
            kind="pattern.report",
            seq=first.seq,
            lamport=1 + max(rep.meta[d].lamport for d in deps),
            deps=deps,
            ts=first.ts + 1,
            body=sample_report(template="fork <*>"),
        )
        assert node.ingest_ops([(fork, False)]).applied == [fork]
        st, found = await scrape(r)
        assert st["key_equivocating"] is True and st["equivocations"] == 1
        assert value(found, "gossipmind_key_equivocating") == 1
        with pytest.raises(InvalidOp) as refused:
            await node.write("pattern.report", sample_report(template="after <*>"))
        assert refused.value.code == "equivocating"
