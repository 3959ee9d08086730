"""Subprocess used by test_crash: ingest ops in batches, print ACK after each commit."""

from __future__ import annotations

import sys
from pathlib import Path

from gossipmind.core import encoding
from gossipmind.core import ops as opsmod
from gossipmind.store.sqlite import Store


def main() -> None:
    store_path, ops_path, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    raws = encoding.decode(ops_path.read_bytes())
    genesis = opsmod.decode(raws[0])
    store = Store.open(store_path) if store_path.exists() else Store.create(store_path, genesis)
    print("READY", flush=True)
    done = len(store.replica.meta) - 1
    ops = [opsmod.decode(r) for r in raws[1 + done :]]
    for start in range(0, len(ops), batch):
        store.ingest(ops[start : start + batch])
        print(f"ACK {done + start + len(ops[start : start + batch])}", flush=True)
    print("DONE", flush=True)
    sys.stdin.read()  # wait to be killed


if __name__ == "__main__":
    main()
