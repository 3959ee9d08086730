"""An idle verifier reads no fix (node/verifier.py ``Verifier.run``).

Every 0.5 s its loop built the row of every fix the replica held, twice (what
waits for a verdict, then outcomes to watch), judged or not: on an idle node
with 20 000 fixes, ~30 % of a core and event-loop stalls of 1.7 s.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from gossipmind.core.replica import Replica
from gossipmind.node import verifier as verifier_mod
from gossipmind.node.verifier import Verifier
from gossipmind.testing import KB, sample_recipe


async def test_idle_ticks_read_no_fix_and_a_new_op_brings_one_pass(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    kb = KB()
    kb.grant("admin", "agent", "member")
    kb.grant("admin", "v1", "verifier", tier=1, scopes=("search",))
    for name in ("agent", "v1"):
        kb.sync("admin", name)
    for i in range(20):
        pattern = kb.report("agent", service="search", operation=f"op{i}").body["pattern"]
        kb.propose("agent", pattern, sample_recipe(f"search.op{i}"), "low")
    r = Replica(kb.genesis)
    for op in kb.ops[1:]:
        r.ingest(op)
    reads: list[int] = []
    real = verifier_mod.fix_row

    def counting(replica: Any, f: Any) -> Any:
        reads.append(1)
        return real(replica, f)

    monkeypatch.setattr(verifier_mod, "fix_row", counting)
    written: list[str] = []

    async def write(kind: str, body: dict[str, Any]) -> None:
        written.append(kind)  # (kept out of the replica: nothing changes)

    v = Verifier(r, kb.key("v1"), write, tick_s=0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(v.run)
        await trio.sleep(1.1)  # two ticks: the first pass, then one idle
        first = len(reads)
        assert first >= 20 and v.passes == 1
        await trio.sleep(50)  # 100 idle ticks
        assert len(reads) == first and v.passes == 1
        report = kb.write("agent", "pattern.report", {**kb.ops[-2].body})  # one new op
        r.ingest(report)
        await trio.sleep(1)
        assert v.passes == 2 and len(reads) > first
        nursery.cancel_scope.cancel()
