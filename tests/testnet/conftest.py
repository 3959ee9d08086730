"""Fixtures of the testnet tests."""

from __future__ import annotations

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
