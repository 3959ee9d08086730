"""Fixtures of the testnet tests."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from tnkit import teardown

from gossipmind.testnet import Testnet


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """A run dir whose testnet (if any) is torn down, and checked, after the test."""
    run = tmp_path / "run"
    tn = Testnet(run)
    seen: dict[int, int | None] = {}
    try:
        yield run
    finally:
        teardown(tn, seen)


@pytest.fixture(autouse=True)
def _collect_leaked_sockets() -> Iterator[None]:
    """py-libp2p leaks the socket of a dial cancelled mid-upgrade (an in-test node that
    closes while dialing): collect it here, so its ResourceWarning does not land in
    an unrelated test."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
