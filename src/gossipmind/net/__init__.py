"""The only package that imports libp2p: host adapter, gossip, sync transport, fake network.

Public API:

* :mod:`~gossipmind.net.interface` — :class:`Transport`, :class:`Stream`,
  :class:`TransportConfig`, frame and message limits, :class:`FrameTooLarge`,
  :class:`StreamEOF`;
* :func:`open_libp2p_transport` (:mod:`~gossipmind.net.host`) — the real thing;
  imported lazily, so ``import gossipmind.net`` does not pay for ``import libp2p``;
* :mod:`~gossipmind.net.gossip` — :class:`GossipBatcher`, :func:`make_validator`,
  :class:`ValidatorStats`, batch encoding;
* :mod:`~gossipmind.net.fake` — :class:`FakeNetwork`, an in-memory network with
  seeded drops, delays and partitions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gossipmind.net.fake import FakeNetwork, FakeStats, FakeTransport
from gossipmind.net.gossip import (
    MAX_BATCH_OPS,
    BatchValidator,
    GossipBatcher,
    ValidatorStats,
    decode_batch,
    encode_batch,
    make_validator,
)
from gossipmind.net.interface import (
    MAX_FRAME_SIZE,
    MAX_GOSSIP_MESSAGE,
    SYNC_PROTOCOL,
    FrameTooLarge,
    Stream,
    StreamEOF,
    StreamHandler,
    Transport,
    TransportConfig,
    Validator,
)

if TYPE_CHECKING:
    from gossipmind.net.host import Libp2pTransport, open_libp2p_transport, peer_id_from_seed

_LAZY = {"Libp2pTransport", "open_libp2p_transport", "peer_id_from_seed"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from gossipmind.net import host

        return getattr(host, name)
    raise AttributeError(f"module 'gossipmind.net' has no attribute {name!r}")


__all__ = [
    "MAX_BATCH_OPS",
    "MAX_FRAME_SIZE",
    "MAX_GOSSIP_MESSAGE",
    "SYNC_PROTOCOL",
    "BatchValidator",
    "FakeNetwork",
    "FakeStats",
    "FakeTransport",
    "FrameTooLarge",
    "GossipBatcher",
    "Libp2pTransport",
    "Stream",
    "StreamEOF",
    "StreamHandler",
    "Transport",
    "TransportConfig",
    "Validator",
    "ValidatorStats",
    "decode_batch",
    "encode_batch",
    "make_validator",
    "open_libp2p_transport",
    "peer_id_from_seed",
]
