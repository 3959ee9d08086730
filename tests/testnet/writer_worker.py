"""A node process that writes ops and prints an ack after each write returned.

``node.write`` returns once the op is committed to the local store, so an ack
line means "acknowledged". The test SIGKILLs this process while it writes.

Usage: python writer_worker.py DATA_DIR OPS TAG BOOTSTRAP_ADDR
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import trio

from gossipmind.node.config import load_config
from gossipmind.node.node import open_node
from gossipmind.testing import sample_report


async def main(data_dir: Path, ops: int, tag: str, bootstrap: str) -> None:
    config = replace(load_config(data_dir), bootstrap=(bootstrap,), min_peers=1)
    async with open_node(config) as node:
        with trio.fail_after(60):
            while not node.transport.peers():
                await trio.sleep(0.05)
        print(json.dumps({"event": "connected"}), flush=True)
        for i in range(ops):
            op = await node.write("pattern.report", sample_report(template=f"{tag} {i} <*>"))
            print(json.dumps({"event": "acked", "id": op.id.hex()}), flush=True)
            await trio.sleep(0.01)
        print(json.dumps({"event": "done"}), flush=True)
        await trio.sleep(600)  # wait to be killed


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
