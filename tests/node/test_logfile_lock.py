"""One log file, one writer: the lock beside it does not depend on how the path is
spelled (node/logfile.py ``lock_log``; a finding of the s12 review)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gossipmind.core.errors import ConfigError
from gossipmind.node.logfile import lock_log

HOLD = """
import sys, time
from pathlib import Path
from gossipmind.node.logfile import lock_log
lock_log(Path(sys.argv[1]), "--log-file")
print("locked", flush=True)
time.sleep(60)
"""


def test_a_symlink_to_a_locked_log_file_is_refused(tmp_path: Path) -> None:
    """``b.log -> logs/a.log`` took ``.b.log.lock``: both processes wrote one file,
    and the first rotation renamed the symlink."""
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "a.log"
    other = tmp_path / "b.log"
    other.symlink_to(log)
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(log)], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            with pytest.raises(ConfigError, match="written by another process"):
                lock_log(other, "--log-file")
        finally:
            holder.kill()
            holder.wait(timeout=10)
    fd = lock_log(other, "--log-file")  # free again once its holder is gone
    os.close(fd)
