"""Node processes of a testnet: spawn, recognise, signal, read their JSON lines.

A process is "ours" only if its pid is alive, not a zombie, started at the
recorded time (``/proc/<pid>/stat`` field 22, so a reused pid is never
mistaken for it) and its command line names the run dir. Nothing else is ever
signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gossipmind.api.process import start_time
from gossipmind.core.errors import NetworkError

ENTRY_POINT = "gossipmind"
_PORT_FLOOR = 20000


def node_command(
    data_dirs: Sequence[Path],
    status_every: float,
    log_level: str = "info",
    log: tuple[Path, int, int] | None = None,
    status_file: Path | None = None,
) -> list[str]:
    """The command that hosts these data dirs (the first one's flags apply to all).

    ``log``: (file, max bytes, backups) of its rotated JSON logs (else stderr);
    ``status_file``: where its status lines go (else stdout)."""
    script = Path(sys.executable).with_name(ENTRY_POINT)
    base = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from gossipmind.cli.main import main; main()"]
    )
    cmd = [*base, "--data-dir", str(data_dirs[0]), "node", "--status-every", str(status_every)]
    cmd += ["--log-level", log_level]
    if log is not None:
        cmd += ["--log-file", str(log[0]), "--log-max-bytes", str(log[1])]
        cmd += ["--log-backups", str(log[2])]
    if status_file is not None:
        cmd += ["--status-file", str(status_file)]
    for extra in data_dirs[1:]:
        cmd += ["--extra-data-dir", str(extra)]
    return cmd


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends (then they arrive): so
    that a process is spawned *and* recorded, or neither, whenever a signal comes.
    A signal raised between the two would leave a process nobody knows of."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def spawn(cmd: list[str], stdout: Path, stderr: Path) -> tuple[int, int]:
    """Start ``cmd`` in a session of its own, appending to the log files.

    Returns its pid and the offset in ``stdout`` where its lines start. The
    process is meant to outlive us (``up`` returns while the nodes run), so no
    ``Popen`` object tracks it: :func:`reap` collects it when it exits.
    """
    stdout.parent.mkdir(parents=True, exist_ok=True)
    with (
        stdout.open("ab") as out,
        stderr.open("ab") as err,
        open(os.devnull, "rb") as null,
    ):
        offset = out.tell()
        actions = [
            (os.POSIX_SPAWN_DUP2, null.fileno(), 0),
            (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, err.fileno(), 2),
        ]
        try:
            # its own session: Ctrl-C in the shell that ran `up` leaves the nodes alone
            # (setsigmask: not the mask of `signals_held`, which may block signals here)
            pid = os.posix_spawn(
                cmd[0], cmd, os.environ, file_actions=actions, setsid=True, setsigmask=()
            )
        except NotImplementedError:  # no POSIX_SPAWN_SETSID: a process group of its own
            pid = os.posix_spawn(
                cmd[0], cmd, os.environ, file_actions=actions, setpgroup=0, setsigmask=()
            )
        except OSError as exc:
            raise NetworkError(f"cannot start {cmd[0]}: {exc}") from exc
    return pid, offset


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` from the state (field 3) on; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


starttime = start_time  # of a pid, in clock ticks since boot; None if gone or a zombie


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far (0 if it is gone)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    try:
        tick = os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        tick = 100
    return (int(fields[11]) + int(fields[12])) / tick


def _cmdline(pid: int) -> str:
    if Path("/proc").is_dir():
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return ""
    try:  # no procfs (macOS): ask ps
        out = subprocess.run(
            ["ps", "-p", str(pid), "-o", "command="],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout


def is_ours(pid: int | None, started: int | None, marker: str | None) -> bool:
    """True if ``pid`` is alive and is the node process we started (see module doc).

    ``marker=None`` skips the command-line check, for a process this very
    invocation just spawned (whatever its command line says, it is ours): then
    the pid and its recorded start time alone identify it.
    """
    if pid is None or pid <= 0:
        return False
    reap(pid)
    procfs = Path("/proc").is_dir()
    if procfs:
        now = starttime(pid)
        if now is None and exiting(pid):  # not gone yet (see exiting): if it is the one
            now = _zombie_start(pid)  # we started, checked below like any other
        if now is None or (started is not None and now != started):
            # it may have exited after the reap above: a zombie reads as gone, and
            # would stay one (a pid in /proc) for as long as this process runs
            reap(pid)
            return False
        if marker is None:
            return started is not None
    else:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        if marker is None:
            return True
    cmd = _cmdline(pid)
    if not cmd and procfs and started is not None:
        # just spawned, exec still in progress (/proc shows no command line yet):
        # the recorded start time already proves it is the process we started
        return True
    return marker in cmd and " node" in cmd


def exiting(pid: int) -> bool:
    """Whether ``pid``'s main thread is a zombie while other threads of it still
    run their exit (one finishing a disk write, under load): /proc reads the
    process as a zombie, but it is not gone, and its parent cannot reap it yet.
    Counted as gone, it was never reaped: a zombie for as long as its parent ran."""
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def _zombie_start(pid: int) -> int | None:
    """The start time of ``pid`` even if its main thread is a zombie (None if gone)."""
    fields = _stat(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (ValueError, IndexError):
        return None


def lingers(pid: int) -> bool:
    """Whether ``pid`` still runs or is still exiting (not a zombie, nor gone)."""
    return starttime(pid) is not None or exiting(pid)


def reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is our child (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def signal_pid(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        raise NetworkError(f"not allowed to signal pid {pid}: {exc}") from exc
    return True


def wait_gone(pids: dict[int, int | None], marker: str | None, timeout: float) -> set[int]:
    """Wait until none of ``pids`` (pid → start time) is ours any more; return survivors."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive:
        alive = {p for p in alive if is_ours(p, pids[p], marker)}
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return alive


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1, below the ephemeral range if possible.

    A fixed port keeps a node's address across restarts. Ports below the kernel's
    ephemeral range are never handed out to outgoing connections, so a stopped
    node's port stays free for its restart.
    """
    low = _ephemeral_low()
    ports: list[int] = []
    rng = random.Random()
    socks: list[socket.socket] = []
    try:
        attempts = 0
        while len(ports) < n and attempts < 50 * n + 100:
            attempts += 1
            port = rng.randrange(_PORT_FLOOR, low) if low > _PORT_FLOOR + 1000 else 0
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            got = s.getsockname()[1]
            if got not in ports:
                ports.append(got)
    finally:
        for s in socks:
            s.close()
    if len(ports) < n:
        raise NetworkError(f"could not find {n} free TCP ports on 127.0.0.1")
    return ports


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def read_events(
    path: Path, offset: int = 0, *, tail: int | None = None
) -> Iterator[dict[str, Any]]:
    """JSON event lines of a stdout log, from ``offset`` (or only its last ``tail`` bytes)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(offset, size - tail) if tail is not None else offset
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return
    lines = data.split(b"\n")
    if start > offset and lines:
        lines = lines[1:]  # a partial first line
    for line in lines:
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue  # a line being written, or not ours
        if isinstance(doc, dict) and "event" in doc:
            yield doc


def latest_status(path: str, name: str, since: float) -> dict[str, Any] | None:
    """The status line of node ``name`` in a status file (``gossipmind node
    --status-file``), if it was written at ``since`` or later (the file of an earlier
    process stays until the new one writes its own). None too for no file (``""``: a
    process started before there were status files)."""
    if not path:
        return None
    for ev in read_events(Path(path), tail=1024 * 1024):
        if ev.get("name") == name and ev["event"] == "status" and ev.get("ts", 0) >= since:
            return ev
    return None


def size(path: Path) -> int:
    """The size of ``path`` (0 if there is none): where a process's lines will start."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def last_error(path: Path, limit: int = 4096, *, offset: int = 0, since: float = 0.0) -> str:
    """The last meaningful line of a process's stderr or log file (for error messages),
    from ``offset`` on; JSON log lines older than ``since`` are skipped (another
    process's, in a file they share)."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(offset, end - limit))
            text = f.read().decode(errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return ""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            return line
        if isinstance(doc, dict) and doc.get("ts", since) < since:
            continue
        if isinstance(doc, dict) and doc.get("level") in ("error", "critical", "warning"):
            return str(doc.get("msg", line))
        if not isinstance(doc, dict):
            return line
    return ""
