"""`gossipmind node --metrics-file`: the metrics for node_exporter's textfile
collector, written by a real node process, kept current, removed at a clean stop;
and the same writer in-process, where the file cannot be written for a while."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from test_cli import Dirs, net  # noqa: F401  (a shared fixture)
from test_node_ports import gossipmind, run

from gossipmind.api.metrics_file import write_metrics
from gossipmind.core.errors import ConfigError
from gossipmind.testing import sample_report
from gossipmind.testing.fleet import fleet

BOUND = 30.0  # s: the most any wait below may take


def samples(path: Path) -> dict[str, float]:
    """Samples of the metrics file with no label but the node's (name -> value)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            assert "peer_id" in s.labels, s  # on every sample: files side by side
            if set(s.labels) == {"peer_id"}:
                out[s.name] = s.value
    return out


def test_a_node_process_writes_its_metrics_file_and_removes_it_at_stop(
    net: Dirs,  # noqa: F811
    tmp_path: Path,
) -> None:
    prom = tmp_path / "collector" / "gossipmind.prom"
    prom.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GOSSIPMIND_DEBUG"}
    args = ["--data-dir", str(net.root / "admin"), "node", "--no-api"]
    args += ["--metrics-file", str(prom), "--metrics-every", "1"]
    log = (tmp_path / "node.log").open("w")
    with (
        log,
        subprocess.Popen(
            gossipmind(*args), stdout=subprocess.PIPE, stderr=log, text=True, env=env
        ) as proc,
    ):
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())  # (the node prints it once started)
            assert ready["event"] == "ready" and ready["metrics_file"] == str(prom)
            assert prom.exists()  # written before the node said it was ready
            first = samples(prom)
            assert first["gossipmind_ops"] >= 1 and first["gossipmind_peers"] == 0
            assert "gossipmind_sync_sessions_total" in first
            mtime = prom.stat().st_mtime_ns
            deadline = time.monotonic() + BOUND
            while prom.stat().st_mtime_ns == mtime and time.monotonic() < deadline:
                time.sleep(0.1)
            assert prom.stat().st_mtime_ns != mtime  # written again, every second
            names = sorted(p.name for p in prom.parent.iterdir())
            assert names == [".gossipmind.prom.lock", "gossipmind.prom"]  # no temp left
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=BOUND) == 0
            assert not prom.exists()  # a stopped node does not look alive
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=BOUND)


@pytest.mark.parametrize(
    ("where", "code", "message"),
    [
        ("dir", 4, "is a directory"),
        ("missing/x.prom", 4, "no directory"),
        ("link.prom", 4, "not a regular file"),  # -> the node's store: never followed
        ("fifo.prom", 4, "not a regular file"),
        ("DATA/x.prom", 4, "inside the data dir"),
    ],
)
def test_a_metrics_file_that_cannot_be_written_is_refused_before_the_node_starts(
    net: Dirs,  # noqa: F811
    tmp_path: Path,
    where: str,
    code: int,
    message: str,
) -> None:
    (tmp_path / "dir").mkdir()
    data = str(net.root / "admin")
    store = net.root / "admin" / "kb.sqlite3"
    before = store.read_bytes()
    (tmp_path / "link.prom").symlink_to(store)
    os.mkfifo(tmp_path / "fifo.prom")
    target = str(tmp_path / where).replace(str(tmp_path / "DATA"), data)
    out = run("--data-dir", data, "node", "--no-api", "--metrics-file", target)
    assert out.returncode == code, out.stderr
    assert message in out.stderr and "--metrics-file" in out.stderr
    assert store.read_bytes() == before
    many = ["--extra-data-dir", str(net.root / "agent")]
    out = run("--data-dir", data, "node", "--no-api", "--metrics-file", "x.prom", *many)
    assert out.returncode == 2 and "--metrics-file names one file" in out.stderr
    out = run("--data-dir", data, "node", "--metrics-every", "0.5")
    assert out.returncode == 2 and "--metrics-every" in out.stderr


async def test_the_writer_follows_the_node_and_outlives_a_failing_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gossipmind.metrics")
    out = tmp_path / "collector"
    out.mkdir()
    prom = out / "node.prom"
    old = os.umask(0o077)  # a service's UMask: node_exporter must still read the file
    try:
        async with (
            fleet(tmp_path / "net", 1, 0, api=False) as (r,),
            trio.open_nursery() as nursery,
        ):
            await nursery.start(write_metrics, r.node, prom, 0.05)
            assert stat.S_IMODE(prom.stat().st_mode) == 0o644
            ops = samples(prom)["gossipmind_ops"]
            await r.node.write("pattern.report", sample_report(template="metrics file <*>"))
            with trio.fail_after(BOUND):  # the file follows the node
                while samples(prom)["gossipmind_ops"] != ops + 1:
                    await trio.sleep(0.05)
            with pytest.raises(ConfigError, match="written by another process"):
                await write_metrics(r.node, prom, 0.05)  # one writer per file
            shutil.rmtree(out)  # the disk fails: it keeps trying, and says so once
            with trio.fail_after(BOUND):
                while not caplog.records:
                    await trio.sleep(0.05)
                await trio.sleep(0.3)  # several more rounds fail
            failed = [x for x in caplog.records if "cannot write the metrics file" in x.message]
            assert len(failed) == 1
            out.mkdir()  # mended
            with trio.fail_after(BOUND):
                while not prom.exists():
                    await trio.sleep(0.05)
            assert any("written again" in x.message for x in caplog.records)
            nursery.cancel_scope.cancel()
    finally:
        os.umask(old)
    assert not prom.exists()
    assert list(out.iterdir()) == []  # no temp left (the lock went with the old dir)


async def test_a_file_that_cannot_be_written_at_start_is_refused(tmp_path: Path) -> None:
    prom = tmp_path / "node.prom"
    (tmp_path / ".node.prom.tmp").mkdir()  # in the way of every write
    async with fleet(tmp_path / "net", 1, 0, api=False) as (r,):
        with pytest.raises(ConfigError, match="cannot be written"):
            await write_metrics(r.node, prom, 1.0)
        assert not prom.exists()


async def test_a_stop_removes_only_the_file_it_wrote(tmp_path: Path) -> None:
    prom = tmp_path / "node.prom"
    async with fleet(tmp_path / "net", 1, 0, api=False) as (r,):
        async with trio.open_nursery() as nursery:
            await nursery.start(write_metrics, r.node, prom, 3600)
            prom.unlink()
            prom.write_text("# someone else's\n")  # replaced meanwhile
            nursery.cancel_scope.cancel()
        assert prom.read_text() == "# someone else's\n"
