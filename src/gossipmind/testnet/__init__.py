"""Local testnet launcher: node processes on 127.0.0.1 under a run dir.

* :class:`Testnet` (:mod:`~gossipmind.testnet.launcher`) — ``up``, ``status``,
  ``kill``, ``restart``, ``start``, ``partition``, ``heal``, ``down``;
* :func:`prepare` (:mod:`~gossipmind.testnet.setup`) — genesis, keys, grants and
  data dirs, without processes;
* :func:`peer_id_of` — a node's libp2p peer id from its public key, without libp2p.
"""

from gossipmind.testnet.launcher import DEFAULT_RUN_DIR, Testnet
from gossipmind.testnet.setup import NodeSpec, prepare
from gossipmind.testnet.state import peer_id_of

__all__ = ["DEFAULT_RUN_DIR", "NodeSpec", "Testnet", "peer_id_of", "prepare"]
