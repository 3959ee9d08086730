"""Shared helpers: nodes with their HTTP API, in-process (fake or real network)."""

from gossipmind.testing.fleet import Running, fleet

__all__ = ["Running", "fleet"]
