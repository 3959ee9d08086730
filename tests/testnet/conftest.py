"""Fixtures of the testnet tests."""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line names ``tmp_path/run/`` and ``node``, like ours."""
    marker = str(tmp_path / "run") + os.sep
    code = "import time; time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code, marker + "node-0", "node"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)
