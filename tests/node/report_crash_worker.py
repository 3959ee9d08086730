"""Subprocess used by test_report_crash: a real node (on the in-memory network) takes
reports as its API does, and says so on stdout, so that the test can SIGKILL it anywhere.

Usage: report_crash_worker.py DATA_DIR PLAN_FILE WINDOW_MS HOLD_MAX_MS [trace]

The plan (canonical msgpack) is a list of bursts, each ``[pause_ms, reports]``; a
report is ``[index, id or None, key, attempts, successes]``: ``attempts`` 0 is a
failure of pattern ``key`` (service ``svc<key>``), else an outcome of fix ``key``.
The reports of a burst are taken concurrently (one task each, like concurrent API
requests: ``Reporter.take_failure`` / ``take_outcome``, what the API awaits before
its 202), then the worker sleeps ``pause_ms``. After the last burst it waits a few
windows, stops the node cleanly (``open_node``'s exit: ``Reporter.flush_into``) and
prints ``DONE <duplicates>``. Lines:

* ``READY <journal rows recovered>``: the node is open (the journal recovered);
* ``SEND <index>`` before a report is handed to the reporter, ``ACK <index>`` once it
  was taken (the API would answer 202 now), ``NACK <index>`` if it was refused (503);
* with ``trace``, ``T <first word>`` before every SQL statement of the node's store.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import trio

from gossipmind.core import encoding
from gossipmind.core.errors import Unavailable
from gossipmind.learn.patterns import Failure
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import Node, open_node


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fix_id(key: int) -> bytes:
    return bytes([0xF0 + key]) * 32


def failure(key: int, n: int) -> Failure:
    return Failure(f"svc{key}", "call", "TimeoutError", f"timed out after {n} ms")


async def take(node: Node, report: list[Any]) -> None:
    index, rid, key, attempts, successes = report
    say(f"SEND {index}")
    try:
        if attempts == 0:
            await node.reporter.take_failure(failure(key, index), rid)
        else:
            await node.reporter.take_outcome(fix_id(key), attempts, successes, rid)
    except Unavailable:
        say(f"NACK {index}")
        return
    say(f"ACK {index}")


async def main() -> None:
    data, plan_file = Path(sys.argv[1]), Path(sys.argv[2])
    window_ms, hold_ms, trace = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:] == ["trace"]
    plan: list[list[Any]] = encoding.decode(plan_file.read_bytes())
    cfg = NodeConfig(
        data_dir=data,
        report_window_ms=window_ms,
        report_hold_max_ms=hold_ms,
        learn=False,
        synchronous="NORMAL",  # a process killed loses nothing committed (WAL)
    )
    async with open_node(cfg, fake=FakeNetwork(seed=1)) as node:
        say(f"READY {node.reporter.journaled}")
        if trace:
            node.store.conn.set_trace_callback(
                lambda sql: say("T " + sql.split(None, 1)[0].upper())
            )
        for pause_ms, reports in plan:
            async with trio.open_nursery() as nursery:
                for report in reports:
                    nursery.start_soon(take, node, report)
            await trio.sleep(pause_ms / 1000)
        await trio.sleep(3 * window_ms / 1000)  # some windows are written while running
    say(f"DONE {node.reporter.duplicates}")


if __name__ == "__main__":
    trio.run(main)
