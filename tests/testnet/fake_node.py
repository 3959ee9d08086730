"""A stand-in for ``gossipmind node`` in launcher tests (no libp2p, starts in ~50 ms).

``python fake_node.py MODE [the node's arguments: --data-dir D node --status-every S …]``

* ``silent``: never gets ready; sleeps until signalled;
* ``lonely``: logs a ``ready`` line per data dir (with the peer id the run dir's
  state.json expects), then a ``status`` line per node every status interval,
  always with no peer;
* ``peered``: as ``lonely``, but with one peer (a launch finds it connected).

SIGTERM ends it (exit 0), like a node.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "ts": round(time.time(), 3), **fields}), flush=True)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "silent":
        while True:
            time.sleep(1)
    flags = ("--data-dir", "--extra-data-dir")
    dirs = [Path(args[i + 1]) for i, a in enumerate(args) if a in flags]
    every = float(args[args.index("--status-every") + 1])
    state = json.loads((dirs[0].parent / "state.json").read_text())
    peer_ids = {n["name"]: n["peer_id"] for n in state["nodes"]}
    for d in dirs:
        emit("ready", name=d.name, peer_id=peer_ids[d.name])
    peers = 1 if mode == "peered" else 0
    while True:
        time.sleep(every)
        for d in dirs:
            emit("status", name=d.name, peers=peers, ops=0, gossip_rejected={})


if __name__ == "__main__":
    main()
