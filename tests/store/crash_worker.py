"""Subprocess used by test_crash: ingest ops in batches, print ACK after each commit.

Usage: crash_worker.py STORE OPS_FILE BATCH MODE [trace]

* MODE ``ingest`` calls :meth:`Store.ingest` per batch (decoded ops); ``stream``
  feeds raw batches through the pipelined :meth:`Store.ingest_stream`.
* The ops file is a canonical list of raw ops, the genesis first. Everything the
  store already knows (applied, pending or rejected) was a durable prefix of the
  list: the worker resumes after it and prints ``READY <index>``.
* ``ACK <end>`` means ops ``[1, end)`` of the list are durable (the batch's
  transaction committed and :meth:`Store.ingest` returned).
* With ``trace``, every SQL statement is announced as ``T <first word>`` before
  it runs, so the test can kill the process inside a transaction.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gossipmind.core import encoding
from gossipmind.core import ops as opsmod
from gossipmind.store.sqlite import Store


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    store_path, ops_path = Path(sys.argv[1]), Path(sys.argv[2])
    batch, mode, trace = int(sys.argv[3]), sys.argv[4], sys.argv[5:] == ["trace"]
    raws: list[bytes] = encoding.decode(ops_path.read_bytes())
    genesis = opsmod.decode(raws[0])
    store = Store.open(store_path) if store_path.exists() else Store.create(store_path, genesis)
    known = store.replica.known
    start = next((i for i in range(1, len(raws)) if not known(opsmod.op_id(raws[i]))), len(raws))
    if any(known(opsmod.op_id(r)) for r in raws[start:]):
        say("ERROR the durable ops are not a prefix of the list")
        sys.exit(3)
    say(f"READY {start}")
    if trace:
        store.conn.set_trace_callback(lambda sql: say("T " + sql.split(None, 1)[0].upper()))
    ends = [*range(start + batch, len(raws), batch), len(raws)]
    bounds = list(zip([start, *ends[:-1]], ends, strict=True)) if start < len(raws) else []
    if mode == "stream":
        results = store.ingest_stream(raws[a:b] for a, b in bounds)
        for (_, b), _result in zip(bounds, results, strict=True):
            say(f"ACK {b}")
    else:
        for a, b in bounds:
            store.ingest([opsmod.decode(r) for r in raws[a:b]])
            say(f"ACK {b}")
    store.conn.set_trace_callback(None)
    say("DONE")
    sys.stdin.read()  # wait to be killed


if __name__ == "__main__":
    main()
