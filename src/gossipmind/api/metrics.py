"""The node's status in the Prometheus text format (0.0.4): ``GET /v1/metrics``,
and ``gossipmind node --metrics-file`` (:mod:`gossipmind.api.metrics_file`).

Every figure comes from the same dict as ``GET /v1/status`` (:func:`render`
takes it), named ``gossipmind_<section>_<field>``: counters end in ``_total``
and only grow while the process runs (they restart from 0 with it), gauges go
up and down. The fields are listed here one by one, so a name never changes by
accident; ``SKIPPED`` names the numeric fields of the status deliberately left
out (a test checks that every numeric field is one or the other).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from gossipmind import __version__
from gossipmind.node import build
from gossipmind.node.node import Node

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

COUNTER, GAUGE = "counter", "gauge"

# (path in the status dict, type, help). The name is the path joined by "_"
# (without the "counters." of the node's own counters).
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("ops", GAUGE, "Ops applied in the local replica."),
    ("heads", GAUGE, "Heads of the op DAG."),
    ("pending", GAUGE, "Ops waiting for missing dependencies."),
    ("pending_evicted", COUNTER, "Ops dropped from the full pending buffer."),
    ("rejected", GAUGE, "Ops this replica rejected (kept, bounded)."),
    ("equivocations", GAUGE, "Sequence numbers a key signed two different ops with."),
    ("key_equivocating", GAUGE, "1 if this node's key equivocated: all it signed is void."),
    ("known_peers", GAUGE, "Peers in the address book."),
    ("foreign_peers", GAUGE, "Peers found on another network, kept off for 10 minutes."),
    ("explored", COUNTER, "Exploration dials that connected."),
    ("gossip_accepted", COUNTER, "Gossip messages the validator accepted."),
    ("counters.gossip_messages", COUNTER, "Gossip messages received and ingested."),
    ("counters.gossip_ops", COUNTER, "Ops those gossip messages carried."),
    ("counters.gossip_applied", COUNTER, "Ops new to this node that gossip brought."),
    ("counters.gossip_dropped", COUNTER, "Gossip messages dropped by an injected lossy link."),
    ("counters.ops_applied", COUNTER, "Ops applied (gossip, sync and local writes)."),
    ("counters.ops_rejected", COUNTER, "Ops rejected."),
    ("counters.ops_written", COUNTER, "Ops this node authored."),
    ("sync.sessions", COUNTER, "Sync sessions started."),
    ("sync.completed", COUNTER, "Sync sessions completed."),
    ("sync.failed", COUNTER, "Sync sessions failed."),
    ("sync.ops_received", COUNTER, "Ops received by sync."),
    ("sync.ops_sent", COUNTER, "Ops sent by sync."),
    ("sync.op_bytes_sent", COUNTER, "Bytes of the ops sent by sync."),
    ("sync.frames_sent", COUNTER, "Sync frames sent."),
    ("sync.frames_received", COUNTER, "Sync frames received."),
    ("sync.bytes_sent", COUNTER, "Sync bytes sent."),
    ("sync.bytes_received", COUNTER, "Sync bytes received."),
    ("sync.refused", COUNTER, "Sync sessions this node refused."),
    ("sync.refused_penalized", COUNTER, "Refused sync sessions that cost the peer a penalty."),
    ("writes.groups", COUNTER, "Group commits of local writes."),
    ("writes.ops", COUNTER, "Ops committed in those groups."),
    ("writes.largest", GAUGE, "The largest group committed so far."),
    ("checkpoints.background", COUNTER, "WAL checkpoints the checkpoint thread ran."),
    ("checkpoints.inline", COUNTER, "WAL checkpoints a commit ran (the log past its limit)."),
    ("checkpoints.incomplete", COUNTER, "Checkpoints that left frames in the log."),
    ("checkpoints.failed", COUNTER, "Checkpoints that failed."),
    ("reports.duplicates", COUNTER, "Reports sent again whose id was counted already."),
    ("reports.journaled", GAUGE, "Reports answered and journaled, not written in an op yet."),
    ("reports.held", GAUGE, "Patterns and fixes whose steady stream of reports is held."),
    ("reports.journal_commits", COUNTER, "Journal commits of reports (a burst shares one)."),
    ("learner.rounds", COUNTER, "Learning rounds run in idle time."),
    ("learner.interrupted", COUNTER, "Learning rounds cut short by the agent's activity."),
    ("learner.busy_rounds", COUNTER, "Learning rounds run while the agent was busy (starved)."),
    ("learner.synthesized", COUNTER, "Fixes synthesized."),
    ("learner.drilled", COUNTER, "Fixes drilled in the simulator."),
    ("learner.proposed", COUNTER, "Fixes proposed."),
    ("learner.skipped_worse", COUNTER, "Fixes not proposed: no better than one known."),
    ("learner.skipped_proposed", COUNTER, "Fixes not drilled nor proposed: proposed already."),
    ("learner.waiting_turn", GAUGE, "Due patterns waiting for an earlier node's proposal."),
    ("learner.reconsidered", COUNTER, "Done patterns looked at again: all their fixes rejected."),
    ("learner.fallbacks", COUNTER, "Candidates replaced by their fallback: their fix rejected."),
    ("learner.refused", COUNTER, "Proposals the replica refused."),
    ("learner.waiting_membership", GAUGE, "1 while proposals wait for a membership grant."),
    ("learner.busy_s", COUNTER, "Seconds spent learning."),  # learner_busy_seconds_total
    ("learner.idle", GAUGE, "1 while the agent is idle (sleep time)."),
    ("verifier.checked", COUNTER, "Fixes this verifier checked."),
    ("verifier.accepted", COUNTER, "Fixes this verifier attested as accepted."),
    ("verifier.rejected", COUNTER, "Fixes this verifier attested as rejected."),
    ("verifier.waiting", COUNTER, "Times a fix had to wait for more evidence before a verdict."),
    ("verifier.revoked", COUNTER, "Fix revocations this verifier signed."),
    ("verifier.suspected", GAUGE, "Accepted fixes with bad outcome totals, not revoked yet."),
    ("verifier.out_of_scope", COUNTER, "Fixes outside this verifier's scopes."),
    ("verifier.errors", COUNTER, "Verifier errors."),
)

# (path of a dict of counts by reason, help): one labelled counter each.
BY_REASON: tuple[tuple[str, str], ...] = (
    ("gossip_rejected", "Gossip messages rejected, by reason."),
    ("counters.rejected_by_reason", "Ops rejected, by reason."),
    ("sync.failed_by_reason", "Sync sessions failed, by reason."),
    ("sync.declined_by_reason", "Sync sessions peers declined before their hello, by reason."),
)

# Numeric fields of the status deliberately not exported (text and lists never are).
# The build's versions are labels of gossipmind_info, not values.
SKIPPED: frozenset[str] = frozenset({"build.fold_version", "build.schema_version"})


def _get(status: Mapping[str, Any], path: str) -> Any:
    value: Any = status
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


RENAMED = {"learner.busy_s": "learner.busy_seconds"}  # Prometheus spells units out


def metric_name(path: str, kind: str) -> str:
    path = RENAMED.get(path, path)
    base = "gossipmind_" + path.removeprefix("counters.").replace(".", "_")
    return base + "_total" if kind == COUNTER else base


def _label(value: object) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: Any) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return None


def _family(name: str, kind: str, help_: str, samples: list[str]) -> Iterator[str]:
    yield f"# HELP {name} {help_}"
    yield f"# TYPE {name} {kind}"
    yield from samples


def render(status: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> str:
    """The exposition of ``status`` (the dict ``GET /v1/status`` answers). ``labels``
    go on every sample (a file beside other nodes' files needs them: node_exporter
    merges the files, and samples alike in name and labels would collide)."""
    const = [f'{k}="{_label(v)}"' for k, v in (labels or {}).items()]

    def sample(name: str, value: object, **own: object) -> str:
        pairs = [f'{k}="{_label(v)}"' for k, v in own.items()] + const
        return f"{name}{{{','.join(pairs)}}} {value}" if pairs else f"{name} {value}"

    lines: list[str] = []
    info = {
        "version": __version__,
        "commit": build.COMMIT or "",
        "fold_version": build.FOLD_VERSION,
        "schema_version": build.SCHEMA_VERSION,
        "network": status.get("network", ""),
        "peer_id": status.get("peer_id", ""),
        "key": status.get("key", ""),
    }
    line = sample(
        "gossipmind_info", 1, **{k: v for k, v in info.items() if k not in (labels or {})}
    )
    lines += _family("gossipmind_info", GAUGE, "The node: version, network, ids.", [line])
    peers = status.get("peers")
    if isinstance(peers, list):
        line = sample("gossipmind_peers", len(peers))
        lines += _family("gossipmind_peers", GAUGE, "Connected peers.", [line])
    roles = status.get("roles")
    if isinstance(roles, list):
        samples = [sample("gossipmind_role", 1, role=r) for r in sorted(roles)]
        lines += _family("gossipmind_role", GAUGE, "Roles of this node's key (1 each).", samples)
    for path, kind, help_ in FIELDS:
        number = _number(_get(status, path))
        if number is not None:
            name = metric_name(path, kind)
            lines += _family(name, kind, help_, [sample(name, number)])
    for path, help_ in BY_REASON:
        counts = _get(status, path)
        if isinstance(counts, Mapping):
            name = metric_name(path, COUNTER)
            samples = [
                sample(name, int(n), reason=reason)
                for reason, n in sorted(counts.items(), key=lambda kv: str(kv[0]))
            ]
            lines += _family(name, COUNTER, help_, samples)
    return "\n".join(lines) + "\n"


def numeric_paths(status: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """The paths of the numeric (and boolean) fields of ``status``, dicts of
    counts by reason and lists excluded (for the test that every one is exported
    or skipped)."""
    for key, value in status.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if path not in {p for p, _ in BY_REASON}:
                yield from numeric_paths(value, path + ".")
        elif _number(value) is not None:
            yield path


def full_status(node: Node, *, root: bool = True) -> dict[str, Any]:
    """What ``GET /v1/status`` answers: the node's status, its learner's and verifier's
    (``root=False``: without the state root, which metrics do not export and which
    costs a pass over every op id after new ops)."""
    st = node.status(root=root)
    st["build"] = build.describe()
    st["learner"] = vars(node.learner.stats) | {"idle": node.learner.idle()}
    st["verifier"] = vars(node.verifier.stats)
    return st
