"""Fixtures of the benchmark tests."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_leaked_sockets() -> Iterator[None]:
    """py-libp2p leaks the socket of a dial cancelled mid-upgrade (a node that closes
    while its peer maintenance dials): collect it after each test, so its
    ResourceWarning does not land in an unrelated test (as tests/testnet does)."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
