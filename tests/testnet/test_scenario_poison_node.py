"""A scenario whose poisoner's node the testnet lacks is refused up front.

`gossipmind testnet scenario poisoned-fix` on a 4-node testnet (its poisoner
proposes from node-4) ended with "internal error (a bug in gossipmind):
KeyError: 'node-4'", exit 70, after taking its snapshot.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tnkit import stopped_testnet

from gossipmind.core.errors import ConfigError
from gossipmind.testnet import scenario as scenarios
from gossipmind.testnet.run import Runner


def test_a_poisoner_on_a_node_the_testnet_lacks_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tn = stopped_testnet(tmp_path, nodes=4, spares=0)
    monkeypatch.setattr(tn, "alive", lambda _proc: True)  # every node counts as running
    sc = scenarios.load("poisoned-fix").shortened(0.5)
    assert sc.poison is not None and sc.poison["node"] == "node-4"
    with pytest.raises(ConfigError, match=r"node-4 .*is not in this testnet.*--nodes 5"):
        Runner(tn, sc)
    fits = scenarios.load("rate-limited-search-api").shortened(0.5)
    Runner(tn, fits)  # the same testnet runs a scenario without a poisoner
