"""Public fakes and builders for tests, simulations and benchmarks.

Not part of a node's runtime. Everything here is deterministic from a seed.
"""

from gossipmind.testing.kb import KB, History, deterministic_identity, sample_recipe, sample_report

__all__ = ["KB", "History", "deterministic_identity", "sample_recipe", "sample_report"]
