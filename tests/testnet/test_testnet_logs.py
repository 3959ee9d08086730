"""A testnet's node processes keep bounded logs: their JSON logs in rotated
``logs/<proc>.log`` files, their status lines in ``logs/<proc>.status`` (replaced,
not appended), and only the ready/stopped lines in ``logs/<proc>.out``; ``status``
reads the status file (and a stale one from an earlier process not)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tnkit import stopped_testnet

from gossipmind.testnet import Testnet, procs
from gossipmind.testnet.state import ProcEntry, save_state

BOUND = 30.0  # s: the most any wait below may take
MAX_BYTES = 1024
BACKUPS = 2


def test_node_processes_of_a_testnet_log_to_rotated_files(run_dir: Path) -> None:
    tn = Testnet(run_dir)
    tn.up(2, 0, status_every=0.2, log_level="debug", log_max_bytes=MAX_BYTES, log_backups=BACKUPS)
    logs = run_dir / "logs"
    p0 = tn.state().procs["p0"]
    assert (p0.log, p0.status) == (str(logs / "p0.log"), str(logs / "p0.status"))
    control = run_dir / "node-0" / "control.json"
    deadline = time.monotonic() + BOUND
    for i in range(300):  # each change of control.json logs a warning: rotate a few times
        if ((logs / f"p0.log.{BACKUPS}").exists() and i > 20) or time.monotonic() >= deadline:
            break
        control.write_text("x" * (i % 7 + 1))
        time.sleep(0.25)
        rotated = sorted(p.name for p in logs.glob("p0.log*"))
        assert len(rotated) <= BACKUPS + 1, rotated
    control.write_text(json.dumps({"block": []}))
    assert sorted(p.name for p in logs.glob("p0.log*")) == ["p0.log", "p0.log.1", "p0.log.2"]
    for p in logs.glob("p*.log*"):
        assert p.stat().st_size <= MAX_BYTES, (p, p.stat().st_size)
        for line in p.read_text().splitlines():
            assert json.loads(line)["level"] in ("debug", "info", "warning", "error")
    rows = {r["name"]: r for r in tn.status()}  # peers: from the status files
    assert all(r["state"] == "running" and r["peers"] == 1 for r in rows.values()), rows
    for proc in ("p0", "p1"):
        events = [e["event"] for e in procs.read_events(logs / f"{proc}.out")]
        assert events == ["ready"], events  # no status line accumulates on stdout
        status = (logs / f"{proc}.status").read_text().splitlines()
        assert len(status) == 1 and json.loads(status[0])["event"] == "status"
        assert (logs / f"{proc}.err").read_text() == ""  # the logs went to the file
    tn.down()
    assert [e["event"] for e in procs.read_events(logs / "p0.out")] == ["ready", "stopped"]


def test_status_reads_the_status_file_but_not_one_an_earlier_process_left(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    tn = stopped_testnet(tmp_path)
    st = tn.state()
    logs = tn.run_dir / "logs"
    logs.mkdir()
    out, status = logs / "p0.out", logs / "p0.status"
    now = time.time()
    out.write_text(json.dumps({"event": "ready", "name": "node-0", "ts": now - 0.9}) + "\n")
    lines = [
        {"event": "status", "name": "node-0", "ts": now - 0.5, "peers": 3},
        {"event": "status", "name": "node-1", "ts": now - 100, "peers": 2},  # before the start
    ]
    status.write_text("".join(json.dumps(x) + "\n" for x in lines))
    st.procs["p0"] = ProcEntry(
        id="p0",
        nodes=["node-0", "node-1"],
        pid=sleeper.pid,
        starttime=procs.starttime(sleeper.pid),
        started_at=now - 1,
        stdout=str(out),
        status=str(status),
    )
    st.node("node-0").proc = st.node("node-1").proc = "p0"
    save_state(tn.run_dir, st)
    rows = {r["name"]: r for r in tn.status()}
    assert rows["node-0"]["state"] == "running" and rows["node-0"]["peers"] == 3
    assert rows["node-1"]["state"] == "starting" and rows["node-1"]["peers"] is None


def test_node_command_names_the_log_and_status_files(tmp_path: Path) -> None:
    cmd = procs.node_command(
        [tmp_path / "a"], 1.0, "info", (tmp_path / "p.log", 2048, 3), tmp_path / "p.status"
    )
    i = cmd.index("--log-file")
    assert cmd[i : i + 6] == [
        "--log-file",
        str(tmp_path / "p.log"),
        "--log-max-bytes",
        "2048",
        "--log-backups",
        "3",
    ]
    assert cmd[cmd.index("--status-file") + 1] == str(tmp_path / "p.status")


def test_why_a_process_exited_is_not_read_from_an_earlier_process_lines(tmp_path: Path) -> None:
    err, log = tmp_path / "p0.err", tmp_path / "p0.log"
    err.write_text("error: an earlier start's problem\n")
    at = procs.size(err)
    assert procs.last_error(err, offset=at) == ""  # this process wrote nothing there
    now = time.time()
    old = {"ts": now - 60, "level": "error", "msg": "an earlier process's error"}
    log.write_text(json.dumps(old) + "\n")
    assert procs.last_error(log, since=now - 1) == ""
    new = {"ts": now, "level": "error", "msg": "cannot open the store"}
    log.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    assert procs.last_error(log, since=now - 1) == "cannot open the store"
    err.write_text("error: an earlier start's problem\nTraceback: this one's\n")
    assert procs.last_error(err, offset=at) == "Traceback: this one's"
    assert procs.size(tmp_path / "none") == 0
