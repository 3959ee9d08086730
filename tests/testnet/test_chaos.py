"""Chaos: 8 node processes, 2 minutes of seeded faults while writers write; then one
state root and every acknowledged op on every node."""

from __future__ import annotations

import os
from pathlib import Path

from gossipmind.testnet import Testnet
from gossipmind.testnet.chaos import MODE, Chaos

DURATION = float(os.environ.get("GOSSIPMIND_CHAOS_SECONDS", "120"))


def test_eight_nodes_survive_two_minutes_of_chaos(run_dir: Path) -> None:
    tn = Testnet(run_dir)
    tn.up(8, 2, per_process=1, settings={"sync_interval": 1.0})
    res = Chaos(tn, duration=DURATION, seed=7, writers=3).run(converge_timeout=120)
    s = res.summary()
    assert res.kills >= 2 and res.partitions >= 1 and res.link_faults >= 1, s["actions"]
    assert len(res.acked) > 100, s
    assert res.converged, s["roots"]
    assert not any(res.missing.values()), s["missing"]  # nothing acknowledged was lost
    assert res.mode == MODE
