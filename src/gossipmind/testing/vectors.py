"""The protocol test vectors published in docs/protocol.md §10 (regenerate with
``python -m gossipmind.testing.vectors``)."""

from __future__ import annotations

import json
from typing import Any

from gossipmind.core import ops as opsmod
from gossipmind.core.identity import Identity
from gossipmind.core.policy import Policy
from gossipmind.core.replica import Replica, create_genesis
from gossipmind.testing.kb import sample_recipe, sample_report

ADMIN_SEED = bytes(range(32))
AGENT_SEED = bytes(range(32, 64))


def vectors() -> list[dict[str, Any]]:
    admin, agent = Identity(ADMIN_SEED), Identity(AGENT_SEED)
    genesis = create_genesis(admin, "vectors", Policy(), bytes(16), 1_700_000_000_000)
    r = Replica(genesis)
    grant = r.create(
        admin, "member.grant", {"member": agent.public, "role": "member"}, 1_700_000_000_001
    )
    report = r.create(agent, "pattern.report", sample_report(count=2), 1_700_000_000_002)
    body = {
        "pattern": report.body["pattern"],
        "recipe": sample_recipe("search"),
        "risk": "low",
        "rationale": "retry timeouts with jittered backoff",
        "origin": "synth",
    }
    propose = r.create(agent, "fix.propose", body, 1_700_000_000_003)
    out = []
    for name, op in (
        ("genesis", genesis),
        ("grant", grant),
        ("report", report),
        ("propose", propose),
    ):
        out.append({"name": name, "id": op.id.hex(), "op": op.raw.hex()})
    return [
        {
            "name": "keys",
            "admin_seed": ADMIN_SEED.hex(),
            "agent_seed": AGENT_SEED.hex(),
            "admin_public": admin.public.hex(),
            "agent_public": agent.public.hex(),
        },
        *out,
        {"name": "root", "root": r.root().hex(), "ops": len(r.meta)},
    ]


def check(vs: list[dict[str, Any]]) -> None:
    """Raise AssertionError unless ``vs`` decode, verify, apply and give the stated root."""
    ops = [opsmod.decode(bytes.fromhex(v["op"])) for v in vs if "op" in v]
    for v, op in zip([v for v in vs if "op" in v], ops, strict=True):
        assert op.id.hex() == v["id"], v["name"]
        assert op.verify_signature(), v["name"]
    r = Replica(ops[0])
    for op in ops[1:]:
        assert r.ingest(op).applied, op.kind
    assert r.root().hex() == vs[-1]["root"]


if __name__ == "__main__":
    print(json.dumps(vectors(), indent=2))
