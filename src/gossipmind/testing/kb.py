"""Build knowledge bases by hand or at random: authors, concurrent replicas, junk.

``KB`` keeps one authoring replica per author, so ops written by different
authors are concurrent until :meth:`KB.sync` merges what one has seen into
another — the shape of real histories (forks, concurrent grants and revokes).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from gossipmind.core import ops as opsmod
from gossipmind.core.identity import Identity
from gossipmind.core.ops import Op
from gossipmind.core.policy import Policy
from gossipmind.core.replica import Replica, create_genesis
from gossipmind.core.schema import fix_id, pattern_id

SERVICES = [("payments", "charge"), ("search", "query"), ("llm", "complete")]
CLASSES = ["timeout", "rate_limited", "server_error"]


def deterministic_identity(seed: int, name: str) -> Identity:
    return Identity(hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=32).digest())


def sample_report(
    service: str = "search",
    operation: str = "query",
    error_class: str = "timeout",
    template: str = "request timed out after <*> ms",
    count: int = 1,
    latency_ms: int = 1000,
    retry_after_ms: int = 0,
    status: str | None = "504",
) -> dict[str, Any]:
    return {
        "pattern": pattern_id(service, operation, error_class, template),
        "service": service,
        "operation": operation,
        "error_class": error_class,
        "template": template,
        "shape": "{}",
        "count": count,
        "window": [0, 1000],
        "stats": {
            "latency_ms_sum": latency_ms * count,
            "latency_n": count,
            "retry_after_ms_max": retry_after_ms,
            "retry_after_n": count if retry_after_ms else 0,
            "status": {status: count} if status else {},
        },
    }


def sample_recipe(
    scope: str = "search", attempts: int = 3, idempotent: bool = False
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {
            "type": "retry",
            "max_attempts": attempts,
            "base_ms": 100,
            "cap_ms": 2000,
            "jitter": "full",
            "on": ["server_error", "timeout"],
        }
    ]
    if idempotent:
        steps.insert(0, {"type": "idempotency_key", "header": "Idempotency-Key"})
    return {"scope": scope, "steps": steps, "budget_ms": 10_000}


class KB:
    """A network under construction: identities, per-author replicas, every op made."""

    def __init__(self, seed: int = 0, policy: Policy | None = None, name: str = "test") -> None:
        self.seed = seed
        self.ids: dict[str, Identity] = {}
        self.admin = self.identity("admin")
        self.genesis = create_genesis(self.admin, name, policy or Policy(), bytes(16), 1)
        self.replicas: dict[str, Replica] = {}
        self.ops: list[Op] = [self.genesis]  # every op made, valid or not, in creation order
        self.ts = 1

    @property
    def net(self) -> bytes:
        return self.genesis.id

    def identity(self, name: str) -> Identity:
        if name not in self.ids:
            self.ids[name] = deterministic_identity(self.seed, name)
        return self.ids[name]

    def key(self, name: str) -> bytes:
        return self.identity(name).public

    def replica(self, name: str) -> Replica:
        if name not in self.replicas:
            self.replicas[name] = Replica(self.genesis)
        return self.replicas[name]

    def _tick(self) -> int:
        self.ts += 1
        return self.ts

    def write(self, name: str, kind: str, body: dict[str, Any]) -> Op:
        """Author a valid op on ``name``'s replica (raises InvalidOp if invalid there)."""
        op = self.replica(name).create(self.identity(name), kind, body, self._tick())
        self.ops.append(op)
        return op

    def forge(self, name: str, kind: str, body: dict[str, Any], *, seq: int | None = None) -> Op:
        """Sign an op on top of ``name``'s replica without checking validity or applying it.

        With ``seq`` lower than the next one this makes an equivocating fork.
        """
        r = self.replica(name)
        ident = self.identity(name)
        next_seq = r.last_seq.get(ident.public, 0) + 1
        seq = next_seq if seq is None else seq
        deps = {h for h in r.heads if r.meta[h].author != ident.public}
        own = r.ops_at(ident.public, min(seq, next_seq) - 1)
        if own:
            deps.add(max(own))
        deps = set(sorted(deps)[-opsmod.MAX_DEPS :])
        lamport = 1 + max(r.meta[d].lamport for d in deps)
        op = opsmod.create(
            ident,
            net=r.net,
            kind=kind,
            seq=seq,
            lamport=lamport,
            deps=sorted(deps),
            ts=self._tick(),
            body=body,
        )
        self.ops.append(op)
        return op

    def sync(self, src: str, dst: str) -> None:
        """Deliver everything ``src`` has applied to ``dst``."""
        s, d = self.replica(src), self.replica(dst)
        by_id = {op.id: op for op in self.ops}
        for oid in s.meta:
            if oid not in d.meta and oid in by_id:
                d.ingest(by_id[oid], verified=True)

    def sync_all(self) -> None:
        names = list(self.replicas)
        for a in names:
            for b in names:
                if a != b:
                    self.sync(a, b)

    # convenience authoring --------------------------------------------------

    def grant(
        self, by: str, name: str, role: str, tier: int = 1, scopes: tuple[str, ...] = ("*",)
    ) -> Op:
        body: dict[str, Any] = {"member": self.key(name), "role": role, "name": name}
        if role == "verifier":
            body.update(tier=tier, scopes=sorted(scopes))
        return self.write(by, "member.grant", body)

    def revoke(self, by: str, name: str, retroactive: bool = False) -> Op:
        body = {"member": self.key(name), "retroactive": retroactive, "reason": "test"}
        return self.write(by, "member.revoke", body)

    def report(self, name: str, **kw: Any) -> Op:
        return self.write(name, "pattern.report", sample_report(**kw))

    def propose(
        self, name: str, pattern: bytes, recipe: dict[str, Any], risk: str = "low"
    ) -> bytes:
        body = {
            "pattern": pattern,
            "recipe": recipe,
            "risk": risk,
            "rationale": "test",
            "origin": "synth",
        }
        self.write(name, "fix.propose", body)
        return fix_id(pattern, recipe)

    def attest_body(self, fix: bytes, scope: str, verdict: str = "accept") -> dict[str, Any]:
        return {"fix": fix, "scope": scope, "verdict": verdict, "reasons": []}


class History:
    """A random but valid-by-construction history from several concurrent authors.

    Actions: grants, plain and retroactive revokes, reports, proposals,
    attestations (authorized or forged by non-verifiers), outcomes, goals,
    reviews, equivocating forks and merges between author replicas.
    """

    AUTHORS = ("a", "b", "c", "d")
    VERIFIERS = ("v1", "v2", "v3")

    def __init__(self, seed: int, steps: int = 60) -> None:
        self.rng = random.Random(seed)
        self.kb = KB(seed=seed)
        kb = self.kb
        for name in self.AUTHORS:
            kb.grant("admin", name, "member")
        kb.grant("admin", "sub", "admin")
        kb.sync("admin", "sub")
        kb.grant("sub", "sub2", "admin")  # a derived admin (protocol.md §6.2)
        for i, name in enumerate(self.VERIFIERS):
            kb.grant("admin", name, "verifier", tier=i + 1, scopes=("search",) if i else ("*",))
        for name in (*self.AUTHORS, *self.VERIFIERS, "sub", "sub2"):
            kb.sync("admin", name)
        kb.sync("sub", "sub2")
        self.fixes: list[tuple[bytes, str]] = []
        self.goals: list[bytes] = []
        for _ in range(steps):
            self.step()

    def step(self) -> None:
        kb, rng = self.kb, self.rng
        everyone = [*self.AUTHORS, *self.VERIFIERS, "admin", "sub", "sub2"]
        roll = rng.random()
        who = rng.choice(everyone)
        try:
            if roll < 0.15:
                kb.sync(rng.choice(everyone), who)
            elif roll < 0.40:
                svc, op = rng.choice(SERVICES)
                kb.report(
                    who,
                    service=svc,
                    operation=op,
                    error_class=rng.choice(CLASSES),
                    count=rng.randint(1, 5),
                )
            elif roll < 0.50:
                svc, op = rng.choice(SERVICES)
                # a fix for a pattern the reports above can name, with its scope
                # (protocol.md §6.5); attestations use the service, which covers it
                pat = sample_report(service=svc, operation=op)["pattern"]
                recipe = sample_recipe(
                    f"{svc}.{op}", rng.randint(2, 4), idempotent=rng.random() < 0.5
                )
                self.fixes.append(
                    (kb.propose(who, pat, recipe, rng.choice(["low", "medium"])), svc)
                )
            elif roll < 0.66 and self.fixes:
                fix, scope = rng.choice(self.fixes)
                body = kb.attest_body(fix, scope, rng.choice(["accept", "accept", "reject"]))
                if who in self.VERIFIERS:
                    kb.write(who, "fix.attest", body)
                else:
                    kb.forge(who, "fix.attest", body)  # unauthorized: must be rejected
            elif roll < 0.72 and self.fixes:
                fix, _ = rng.choice(self.fixes)
                kb.write(
                    who,
                    "fix.outcome",
                    {"fix": fix, "attempts": 4, "successes": rng.randint(0, 4), "window": [0, 1]},
                )
            elif roll < 0.76:
                target = rng.choice([*self.AUTHORS, *self.VERIFIERS, "sub", "sub2", "admin"])
                by = rng.choice(["admin", "sub", "sub2"])
                kb.revoke(by, target, retroactive=rng.random() < 0.3)
            elif roll < 0.80:
                target = rng.choice([*self.AUTHORS, "v1", "v2"])
                role = rng.choice(["member", "verifier"])
                tier = rng.randint(1, 3) if role == "verifier" else 1
                by = rng.choice(["admin", "sub", "sub2"])
                kb.grant(by, target, role, tier=tier, scopes=("search",))
            elif roll < 0.86:
                body = {
                    "title": "g",
                    "scope": "search",
                    "priority": rng.randint(0, 3),
                    "retired": False,
                    "constraints": [{"op": "<=", "field": "retry.max_attempts", "value": 3}],
                }
                if self.goals and rng.random() < 0.4:
                    body["goal"] = rng.choice(self.goals)
                made = kb.write(who, "goal.set", body)
                if "goal" not in body:
                    self.goals.append(made.id)
            elif roll < 0.91 and self.goals:
                gid = rng.choice(self.goals)
                body = {
                    "goal": gid,
                    "version": gid,
                    "verdict": rng.choice(["approve", "reject"]),
                    "comment": "",
                }
                kb.write(who, "goal.review", body)
            elif roll < 0.925:
                r = kb.replica(who)
                last = r.last_seq.get(kb.key(who), 0)
                if last >= 2:
                    kb.forge(who, "pattern.report", sample_report(count=9), seq=last)
            else:
                kb.sync(who, rng.choice(everyone))
        except Exception as exc:
            from gossipmind.core.errors import InvalidOp

            if not isinstance(exc, InvalidOp):
                raise
