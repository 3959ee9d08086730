"""The agent-side SDK (filled in by the learning-loop issue)."""

from __future__ import annotations


class Client:
    """Placeholder until the SDK lands; importing it must stay cheap."""
