"""gossipmind: a peer-to-peer learning network for AI agents.

``import gossipmind`` stays light: the SDK client is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gossipmind._version import __version__
from gossipmind.core.errors import GossipmindError

__all__ = ["Client", "GossipmindError", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from gossipmind.api.client import Client


def __getattr__(name: str) -> Any:
    if name == "Client":
        from gossipmind.api.client import Client

        return Client
    raise AttributeError(f"module 'gossipmind' has no attribute {name!r}")
