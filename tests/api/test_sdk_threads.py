"""A learned retry fix runs the agent's sync call on the agent's own thread (real nodes)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import trio

from conftest import Running, fleet
from gossipmind.api.client import Client, Fix
from gossipmind.learn.executor import Executor

MESSAGE = "connection to inventory db reset by peer"


async def learn_connection_fix(agents: list[Running]) -> bytes:
    """Two agents fail with the same connection error; wait until the fleet accepted a fix."""
    pattern = b""
    for r in agents:
        client = Client(r.spec.dir, stream=False)

        def fail_once(c: Client = client) -> bytes:
            def lookup() -> None:
                raise ConnectionError(MESSAGE)

            with pytest.raises(ConnectionError):
                c.resilient(service="search", operation="lookup")(lookup)()
            failure = ConnectionError(MESSAGE)
            return c.pattern_of(failure, service="search", operation="lookup").pattern

        pattern = await trio.to_thread.run_sync(fail_once)
        client.close()
    with trio.fail_after(30):
        while agents[0].node.fixes.best(pattern) is None:
            await trio.sleep(0.05)
    return pattern


async def test_a_learned_retry_fix_keeps_thread_bound_resources_usable(tmp_path: Path) -> None:
    async with fleet(tmp_path, 3, 1) as (_admin, verifier, a):
        pattern = await learn_connection_fix([verifier, a])
        client = Client(a.spec.dir)
        assert await trio.to_thread.run_sync(client.wait_ready, 10)
        with trio.fail_after(10):  # the fix reaches a's node by gossip, then its stream
            while client.fix_for(pattern) is None:
                await trio.sleep(0.05)
        fix = client.fix_for(pattern)
        assert fix is not None and "timeout" not in {s["type"] for s in fix.recipe["steps"]}

        def agent() -> tuple[int, list[tuple[int, str | None]], int]:
            db = sqlite3.connect(tmp_path / "inventory.db")  # bound to this thread
            db.execute("create table stock (item)")
            db.execute("insert into stock values ('bolt')")
            db.commit()
            local = threading.local()
            local.session = "agent session"
            seen: list[tuple[int, str | None]] = []

            @client.resilient(service="search", operation="lookup")
            def lookup() -> int:
                seen.append((threading.get_ident(), getattr(local, "session", None)))
                if len(seen) == 1:
                    raise ConnectionError(MESSAGE)
                return int(db.execute("select count(*) from stock").fetchone()[0])

            try:
                return lookup(), seen, threading.get_ident()
            finally:
                db.close()

        value, seen, me = await trio.to_thread.run_sync(agent)
        assert value == 1 and client.stats.recoveries == 1
        assert seen == [(me, "agent session")] * 2  # the retry ran on the agent's thread
        client.close()


TIMED = {
    "scope": "search",
    "budget_ms": 5000,
    "steps": [
        {
            "type": "retry",
            "max_attempts": 2,
            "base_ms": 1,
            "cap_ms": 1,
            "jitter": "none",
            "on": ["connection"],
        },
        {"type": "timeout", "ms": 2000},
    ],
}


def test_under_a_timeout_step_attempts_move_unless_the_agent_keeps_them() -> None:
    """docs/sdk.md: a ``timeout`` step moves sync attempts onto a worker thread, and
    ``Executor(..., sync_timeouts=False)`` as the client's executor keeps them home."""
    client = Client(url="http://127.0.0.1:9", token="x" * 20, stream=False)
    fix = Fix(b"\x01" * 32, b"\x02" * 32, TIMED, "", "low")
    seen: list[int] = []

    def lookup() -> int:
        seen.append(threading.get_ident())
        if len(seen) % 2:
            raise ConnectionError(MESSAGE)
        return 1

    moved = client.apply_fix(fix, lookup)
    assert moved.outcome == "success" and "timeout" in moved.applied
    assert threading.get_ident() not in seen

    seen.clear()
    client.executor = Executor(client.registry, classifier=client.classify, sync_timeouts=False)
    kept = client.apply_fix(fix, lookup)
    assert kept.outcome == "success" and [s.step for s in kept.skipped] == ["timeout"]
    assert seen == [threading.get_ident()] * 2
    client.close()
