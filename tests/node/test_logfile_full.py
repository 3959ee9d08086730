"""A log file that cannot be written (a full disk: RLIMIT_FSIZE in a subprocess)
costs one line on stderr per failing spell, not a traceback per record
(node/logfile.py, ``file_handler``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """
import logging, resource, sys
from pathlib import Path
from gossipmind.node.daemon import configure_logging
from gossipmind.node.logfile import file_handler
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (4000, hard))
handler = file_handler(Path(sys.argv[1]), int(sys.argv[2]), 2)
configure_logging("info", handler)
log = logging.getLogger("gossipmind.node")
for i in range(200):
    log.info("line %d %s", i, "x" * 100)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # room again
log.info("after")
print("done", file=sys.stderr)
"""


@pytest.mark.parametrize("max_bytes", [0, 1024 * 1024])
def test_a_full_disk_costs_one_line_on_stderr_not_a_traceback_per_record(
    tmp_path: Path, max_bytes: int
) -> None:
    log = tmp_path / "node.log"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(log), str(max_bytes)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert "Logging error" not in out.stderr and len(lines) <= 3, out.stderr[:2000]
    assert f"cannot write the log file {log}" in lines[0] and "File too large" in lines[0]
    assert "is written again" in lines[1] and lines[-1] == "done"
    assert '"msg": "after"' in log.read_text()
