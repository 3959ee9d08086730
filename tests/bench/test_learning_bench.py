"""bench learning: the contract and the direction of the result on a tiny schedule."""

from __future__ import annotations

from gossipmind.bench.learning import run


def test_learning_bench_contract_and_the_network_helps() -> None:
    r = run((2, 3), calls=8)
    for key in ("name", "value", "unit", "baseline", "ratio", "target", "passed"):
        assert key in r
    for n, part in r["sizes"].items():
        iso, net = part["isolated"], part["networked"]
        assert iso["calls"] == net["calls"] == int(n) * 8  # the same schedule both ways
        assert iso["suffered"] >= int(n) - 1  # isolated: (nearly) every agent pays
        assert net["suffered"] <= iso["suffered"]  # the network never makes it worse
