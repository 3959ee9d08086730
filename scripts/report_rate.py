"""Reports/s through a node's API: ``POST /v1/failures`` answered 202.

Usage: PYTHONPATH=src python scripts/report_rate.py [--src DIR] [--reports N]

Starts one node process (its code from ``--src``, default this checkout's src/)
on a fresh data dir, sends ``--reports`` failure reports, each with its own id,
one at a time on one kept-alive connection, then from 16 threads at once (one
connection each), and prints reports/s for both, and the node's journal
commits when it has them (docs/performance.md, "Reports through the API").
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gossipmind.testnet.setup import prepare


def _send(url: str, token: str, n: int) -> None:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        for i in range(n):
            doc = {
                "service": "payments",
                "operation": "charge",
                "exc_type": "TimeoutError",
                "message": f"timed out after {i} ms",
                "id": secrets.token_hex(16),
            }
            conn.request("POST", "/v1/failures", json.dumps(doc), headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 202:
                raise SystemExit(f"answered {resp.status}")
    finally:
        conn.close()


def _status(url: str, token: str) -> Any:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", "/v1/status", headers={"Authorization": f"Bearer {token}"})
    doc = json.loads(conn.getresponse().read())
    conn.close()
    return doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    ap.add_argument("--reports", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare(Path(tmp), 1, 0)[0].dir
        cmd = [sys.executable, "-c", "from gossipmind.cli.main import main; main()"]
        cmd += ["--data-dir", str(data), "node", "--api-port", "0"]
        env = {**os.environ, "PYTHONPATH": str(args.src), "PYTHONUNBUFFERED": "1"}
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        ) as proc:
            try:
                assert proc.stdout is not None
                url = json.loads(proc.stdout.readline())["api"]
                token = (data / "api.token").read_text().strip()
                _send(url, token, 50)  # warm up
                t = time.perf_counter()
                _send(url, token, args.reports)
                one = args.reports / (time.perf_counter() - t)
                before = _status(url, token).get("reports", {}).get("journal_commits")
                per = args.reports // args.threads
                t = time.perf_counter()
                with ThreadPoolExecutor(args.threads) as pool:
                    list(pool.map(lambda _: _send(url, token, per), range(args.threads)))
                many = per * args.threads / (time.perf_counter() - t)
                after = _status(url, token).get("reports", {}).get("journal_commits")
                commits = None if after is None else after - before
                print(
                    json.dumps(
                        {
                            "src": str(args.src),
                            "one_at_a_time_per_s": round(one),
                            f"{args.threads}_threads_per_s": round(many),
                            f"journal_commits_for_{per * args.threads}": commits,
                        }
                    )
                )
            finally:
                proc.terminate()
                proc.wait(timeout=60)


if __name__ == "__main__":
    main()
