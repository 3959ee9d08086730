"""`gossipmind node --log-file/--log-max-bytes/--log-backups/--status-file`: a real
node process keeps its logs in a few rotated files of bounded size and its status
lines in a file that does not grow; bad values are refused before anything starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_cli import Dirs, net  # noqa: F401  (a shared fixture)
from test_node_ports import gossipmind, run

BOUND = 30.0  # s: the most any wait below may take
MAX_BYTES = 1024
BACKUPS = 2


def logs_of(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name))


def test_a_node_process_rotates_its_log_file_and_keeps_backups_plus_one_files(
    net: Dirs,  # noqa: F811
    tmp_path: Path,
) -> None:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    log, status = logdir / "node.log", logdir / "node.status"
    data = net.root / "admin"
    args = ["--data-dir", str(data), "node", "--no-api", "--log-level", "debug"]
    args += ["--log-file", str(log), "--log-max-bytes", str(MAX_BYTES)]
    args += ["--log-backups", str(BACKUPS), "--status-every", "0.2", "--status-file", str(status)]
    env = {k: v for k, v in os.environ.items() if k != "GOSSIPMIND_DEBUG"}
    err = (tmp_path / "stderr").open("w+")
    with (
        err,
        subprocess.Popen(
            gossipmind(*args), stdout=subprocess.PIPE, stderr=err, text=True, env=env
        ) as proc,
    ):
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["event"] == "ready"
            # every change of control.json makes the node log a line (a warning about
            # the unreadable file): enough of them to rotate the log a few times
            control = data / "control.json"
            deadline = time.monotonic() + BOUND
            for i in range(200):
                if (log.with_name(f"{log.name}.{BACKUPS}")).exists() and i > 30:
                    break
                if time.monotonic() >= deadline:
                    break
                control.write_text("x" * (i % 7 + 1))  # never valid JSON: always a warning
                time.sleep(0.25)
                files = logs_of(log)
                assert len(files) <= BACKUPS + 1, files
            names = [p.name for p in logs_of(log)]
            assert names == ["node.log", "node.log.1", "node.log.2"], names
            status_lines = status.read_text().splitlines()
            assert len(status_lines) == 1  # the latest line of the one node, replaced
            latest = json.loads(status_lines[0])
            assert latest["event"] == "status" and latest["name"] == data.name
            assert latest["ts"] >= ready["ts"]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=BOUND) == 0
            rest = proc.stdout.read().splitlines()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=BOUND)
        err.seek(0)
        assert err.read() == ""  # every log line went to the file
    assert [json.loads(x)["event"] for x in rest] == ["stopped"]  # no status line on stdout
    lines = []
    for p in logs_of(log):
        assert p.stat().st_size <= MAX_BYTES, (p, p.stat().st_size)
        lines += [json.loads(x) for x in p.read_text().splitlines()]
    assert any("ignoring unreadable" in x["msg"] for x in lines)
    assert any("stopping" in x["msg"] for x in lines)  # the last words too


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--log-max-bytes", "-1"], "'--log-max-bytes': -1 bytes: must be 0 (no rotation) or"),
        (["--log-max-bytes", "100"], "'--log-max-bytes': 100 bytes: must be 0"),
        (["--log-backups", "0"], "'--log-backups': 0 old files: must be 1 to 1000"),
        (["--log-backups", "-3"], "'--log-backups': -3 old files"),
        (["--log-file", "{tmp}/none/node.log"], "'--log-file': no directory {tmp}/none"),
        (["--log-file", "{tmp}"], "is a directory"),
        (["--log-file", "{tmp}/file/node.log"], "'--log-file': no directory {tmp}/file"),
        (["--status-file", "{tmp}/none/st"], "'--status-file': no directory {tmp}/none"),
        (["--status-file", "{tmp}/st"], "--status-file needs --status-every N"),
        (
            ["--status-every", "1", "--status-file", "{tmp}/x", "--log-file", "{tmp}/./x"],
            "--status-file and --log-file name the same file",
        ),
    ],
)
def test_bad_log_settings_are_refused_with_exit_2_and_create_nothing(
    net: Dirs,  # noqa: F811
    tmp_path: Path,
    flags: list[str],
    says: str,
) -> None:
    (tmp_path / "file").write_text("a file, not a directory")
    before = sorted(tmp_path.rglob("*"))
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    out = run("--data-dir", str(net.root / "admin"), "node", "--no-api", *flags)
    assert out.returncode == 2, out.stderr
    assert says.replace("{tmp}", str(tmp_path)) in out.stderr
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("log_max_bytes = -5", "log_max_bytes = -5 bytes: must be 0 (no rotation)"),
        ("log_backups = 0", "log_backups = 0 old files: must be 1 to 1000"),
        ('log_file = "no/such/dir/node.log"', "log_file in {data}'s config: no directory"),
        ("log_file = 3", "log_file has the wrong type"),
    ],
)
def test_bad_log_settings_in_node_toml_are_config_errors(
    net: Dirs,  # noqa: F811
    setting: str,
    says: str,
) -> None:
    data = net.root / "admin"
    (data / "node.toml").write_text(setting + "\n")
    out = run("--data-dir", str(data), "node", "--no-api")
    assert out.returncode == 4, out.stderr
    assert says.replace("{data}", str(data)) in out.stderr
    assert not (data / "no").exists()


def test_with_max_bytes_0_the_log_file_is_reopened_after_logrotate_moves_it(
    tmp_path: Path,
) -> None:
    import logging

    from gossipmind.node.logfile import file_handler

    path = tmp_path / "node.log"
    handler = file_handler(path, 0, 5)
    logger = logging.Logger("logrotate-test")
    logger.addHandler(handler)
    try:
        logger.warning("before")
        path.rename(tmp_path / "node.log.1")  # what logrotate does (no copytruncate)
        logger.warning("after")
    finally:
        handler.close()
    assert (tmp_path / "node.log.1").read_text() == "before\n"
    assert path.read_text() == "after\n"


def test_libp2p_records_go_to_the_log_file_too(tmp_path: Path) -> None:
    """--debug-libp2p lets py-libp2p log at every level, and its CRITICAL records
    always pass: both reach the node's log (file or stderr) as JSON lines. They
    went to Python's last-resort handler: plain text on stderr, WARNING and up."""
    import logging

    from gossipmind.net.host import configure_logging as libp2p_logging
    from gossipmind.node import daemon
    from gossipmind.node.logfile import file_handler

    path = tmp_path / "node.log"
    gm = logging.getLogger("gossipmind")
    saved = (gm.handlers[:], gm.level, gm.propagate, logging.getLogger().handlers[:])
    try:
        daemon.configure_logging("info", file_handler(path, MAX_BYTES, BACKUPS))
        libp2p_logging(True)
        logging.getLogger("libp2p.test").debug("a libp2p debug record")
        libp2p_logging(False)
        logging.getLogger("libp2p.test").info("silenced")
        logging.getLogger("libp2p.test").critical("a libp2p critical record")
    finally:
        for h in gm.handlers:
            logging.getLogger().removeHandler(h)
            h.close()
        gm.handlers[:], gm.level, gm.propagate = saved[0], saved[1], saved[2]
        logging.getLogger().handlers[:] = saved[3]
        daemon._ON_ROOT.clear()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(x["logger"], x["msg"]) for x in lines] == [
        ("libp2p.test", "a libp2p debug record"),
        ("libp2p.test", "a libp2p critical record"),
    ]


def test_two_processes_cannot_share_a_log_file_and_node_toml_names_it_in_the_data_dir(
    net: Dirs,  # noqa: F811
) -> None:
    admin, agent = net.root / "admin", net.root / "agent"
    shared = agent / "node.log"
    (agent / "node.toml").write_text('log_file = "node.log"\n')  # relative to the data dir
    args = ["--data-dir", str(admin), "node", "--no-api", "--log-file", str(shared)]
    env = {k: v for k, v in os.environ.items() if k != "GOSSIPMIND_DEBUG"}
    with subprocess.Popen(
        gossipmind(*args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline())["event"] == "ready"
            second = run("--data-dir", str(agent), "node", "--no-api")
            assert second.returncode == 4, second.stderr
            assert f"log_file in {agent}'s config {shared} is written by another process" in (
                second.stderr
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=BOUND) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=BOUND)
    before = len(shared.read_text().splitlines())
    with subprocess.Popen(
        gossipmind("--data-dir", str(agent), "node", "--no-api"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline())["event"] == "ready"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=BOUND) == 0
            assert proc.stderr is not None and proc.stderr.read() == ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=BOUND)
    lines = shared.read_text().splitlines()
    assert len(lines) > before and "stopping" in json.loads(lines[-1])["msg"]


def test_a_status_file_that_is_node_toml_s_log_file_is_refused(
    net: Dirs,  # noqa: F811
) -> None:
    """Review of dbf7568: only --log-file was compared with --status-file, so a
    node whose node.toml names its log_file ran with the same --status-file and
    the status lines replaced its log at every interval."""
    data = net.root / "admin"
    (data / "node.toml").write_text('log_file = "node.log"\n')
    status = data / "node.log"
    out = run(
        "--data-dir", str(data), "node", "--no-api", "--status-every", "0.2",
        "--status-file", str(status),
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert f"--status-file and log_file in {data}'s config name the same file" in out.stderr
    assert not status.exists()
