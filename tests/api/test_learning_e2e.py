"""Issue 4 end to end on real libp2p nodes, and PII never leaving a node.

Four nodes over TCP on 127.0.0.1, each with its HTTP API and an SDK client:
agents beside three nodes hit a flaky service; once two distinct reporters
crossed the threshold a fix is synthesized in sleep time, proposed, attested by
the verifier node and accepted; the fourth node's agent — which never reported
the pattern — then recovers from its very first failure with that fix.
"""

from __future__ import annotations

import random
import sqlite3
import string
from pathlib import Path

import trio

from conftest import fleet
from gossipmind.api.client import Client


class FlakyPayments:
    """A charge call that times out (with PII in the message) on the first ``fail`` calls."""

    def __init__(self, fail: int, rng: random.Random) -> None:
        self.fail = fail
        self.rng = rng
        self.calls = 0

    def __call__(self, customer: str, amount: int) -> str:
        self.calls += 1
        if self.calls <= self.fail:
            req = "".join(self.rng.choices(string.hexdigits, k=16))
            raise TimeoutError(
                f"charge of {amount} cents for {customer} timed out after 3000 ms (req {req})"
            )
        return f"ok:{customer}:{amount}"


async def test_a_fix_learned_by_three_agents_saves_the_fourth(tmp_path: Path) -> None:
    rng = random.Random(4)
    async with fleet(tmp_path, 4, 1, fake=False, sync_interval=1.0) as nodes:
        with trio.fail_after(30):
            while not all(r.node.transport.peers() for r in nodes):
                await trio.sleep(0.05)
        clients = [Client(r.spec.dir) for r in nodes]
        for c in clients:
            assert await trio.to_thread.run_sync(c.wait_ready, 10)
        reporters, newcomer = clients[:3], clients[3]

        def agent_fails(c: Client, i: int) -> None:
            charge = c.resilient(service="payments-search", operation="lookup")(
                FlakyPayments(99, rng)
            )
            try:
                charge(f"customer{i}@example.com", 1000 + i)
            except TimeoutError:
                return
            raise AssertionError("the flaky service should have failed")

        for i in range(6):
            await trio.to_thread.run_sync(agent_fails, reporters[i % 3], i)
        with trio.fail_after(60):
            while not any(newcomer._cache.values()):
                await trio.sleep(0.1)
        fixes = next(iter(newcomer._cache.values()))
        fix = next(iter(fixes.values()))
        assert nodes[3].node.reporter.local_counts == {}  # the fourth never reported it
        row = nodes[3].node.fixes.row(fix.id)
        assert row is not None and row["status"] == "accepted"
        assert row["attestations"][0]["verifier"] == nodes[1].node.identity.public

        service = FlakyPayments(1, rng)  # its very first call fails, the retry succeeds
        charge = newcomer.resilient(service="payments-search", operation="lookup")(service)
        assert (
            await trio.to_thread.run_sync(charge, "first@example.com", 5)
            == "ok:first@example.com:5"
        )
        assert newcomer.stats.recoveries == 1 and service.calls == 2
        with trio.fail_after(30):
            while (nodes[0].node.fixes.row(fix.id) or {}).get("successes") != 1:
                await trio.sleep(0.1)
        for c in clients:
            await trio.to_thread.run_sync(c.close)


PII = [
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "jane.doe+billing@example.org",
    "+1 (415) 555-0132",
    "192.168.17.23",
    "2001:db8::8a2e:370:7334",
    "9b2c7c3e-1f4a-4d8e-a5f1-3c2b1a0d9e8f",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "AKIAIOSFODNN7EXAMPLE",
]


def dump_everything(db: Path) -> bytes:
    """Every cell of every table of a store, as bytes."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        for row in conn.execute(f"SELECT * FROM {table}"):
            out.extend(v if isinstance(v, bytes) else str(v).encode() for v in row)
    conn.close()
    return b"\n".join(out)


async def test_pii_appears_in_no_op_no_row_no_gossip(tmp_path: Path) -> None:
    captured: list[bytes] = []
    async with fleet(tmp_path, 2, 0) as (a, b):
        original = a.node.transport.publish

        async def recording_publish(data: bytes) -> None:
            captured.append(data)
            await original(data)

        a.node.batcher._publish = recording_publish
        client = Client(a.spec.dir, stream=False)

        def report_all() -> None:
            for i, secret in enumerate(PII):
                client.report_failure(
                    TimeoutError(
                        f"call for {secret} failed; retry https://api.example.com/users/janedoe?token={secret}"
                    ),
                    service="billing",
                    operation="charge",
                    context={"customer": secret, "card": {"number": secret}, "amount": 1000 + i},
                    status=504,
                    latency_ms=3000,
                )
            client.close()

        await trio.to_thread.run_sync(report_all)
        await a.node.reporter.flush()
        with trio.fail_after(15):
            while not b.node.store.replica.fold.patterns or not captured:
                await trio.sleep(0.05)
        await a.node.batcher.flush()
        stores = [dump_everything(r.spec.dir / "kb.sqlite3") for r in (a, b)]
        haystacks = [*stores, *captured]
        for secret in [*PII, "janedoe", "4111111111111111"]:
            for hay in haystacks:
                assert secret.encode() not in hay, secret
        assert sum(p.count for p in b.node.store.replica.fold.patterns.values()) == len(PII)
