"""Is the process that wrote a file still the one running under its pid?

A pid alone does not say so: after the writer was killed (SIGKILL leaves its
files behind) the kernel may give its pid to any other process. Its start time
does: ``/proc/<pid>/stat`` field 22, in clock ticks since boot, differs for a
process that reused the pid. Without procfs (macOS, BSD) only the pid is checked.

Used for the node's ``api.json`` (written by the API server, trusted by the
SDK); no imports beyond the standard library, so any layer above may use it.
"""

from __future__ import annotations

import os
from pathlib import Path


def has_procfs() -> bool:
    return Path("/proc/self/stat").exists()


def start_time(pid: int) -> int | None:
    """Start time of ``pid`` (clock ticks since boot); None if gone, a zombie, or unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rfind(")") + 2 :].split()  # from field 3 (the state) on
        if fields[0] in ("Z", "X"):
            return None
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def own_start_time() -> int | None:
    """This process's start time, or None where there is no procfs."""
    return start_time(os.getpid())


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without sending anything)."""
    if os.name != "posix":  # os.kill(pid, 0) would not be a mere check
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # (no pid_t is that large)
        return False
    except OSError:  # e.g. EPERM: it exists, as another user
        return True
    return True


def still_running(pid: int, started: int | None) -> bool:
    """Whether the process that was ``pid``, started at ``started``, still runs.

    ``started=None`` (a writer that recorded none) or no procfs: the pid check alone.
    """
    if started is None or not has_procfs():
        return pid_alive(pid)
    return start_time(pid) == started
