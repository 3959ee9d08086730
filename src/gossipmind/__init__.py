"""gossipmind: a peer-to-peer learning network for AI agents.

``import gossipmind`` stays light: the SDK client is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gossipmind.core.errors import GossipmindError

__version__ = "0.1.0"
__all__ = ["Client", "GossipmindError", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from gossipmind.api.client import Client


def __getattr__(name: str) -> Any:
    if name == "Client":
        from gossipmind.api.client import Client

        return Client
    raise AttributeError(f"module 'gossipmind' has no attribute {name!r}")
