"""A daemon whose shutdown takes (far) too long: a service that, once cancelled,
waits 120 s shielded. Usage: python slow_stop_worker.py DATA_DIR"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import trio

from gossipmind.node import daemon
from gossipmind.node.config import NodeConfig


async def slow_to_stop(node: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started("slow")
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.sleep(120)


if __name__ == "__main__":
    cfg = NodeConfig(data_dir=Path(sys.argv[1]), synchronous="NORMAL", learn=False)
    daemon.run([("node-0", cfg)], services={"stall": slow_to_stop})
