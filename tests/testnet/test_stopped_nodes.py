"""Testnet commands on a testnet with stopped or frozen nodes, as a review found them:

* `scenario` put agents on stopped nodes, ran 76 s and blamed the scenario;
* `status` let stopped stores outvote the running node on "converged";
* `stop` said "stopped" (exit 0) of a node it had to SIGKILL, or that survived it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tnkit import stopped_testnet

from gossipmind.api.transport import Http, discover
from gossipmind.cli.main import cli
from gossipmind.core.encoding import encode
from gossipmind.core.errors import ConfigError
from gossipmind.testing.kb import sample_report
from gossipmind.testnet import Testnet, procs
from gossipmind.testnet import scenario as scenarios
from gossipmind.testnet.run import Runner
from gossipmind.testnet.state import ProcEntry, save_state

GOSSIPMIND = Path(sys.executable).with_name("gossipmind")


def gm(run_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GOSSIPMIND), "testnet", *args, "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def rows(tn: Testnet) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in tn.status()}


# -- scenario ----------------------------------------------------------------------------


def test_scenario_refuses_to_put_agents_on_stopped_nodes(run_dir: Path) -> None:
    """With node-2 stopped, the old run put an agent there anyway, which reported
    nothing: 76 s, then "expectation not met … (none proposed)", exit 1."""
    tn = Testnet(run_dir)
    tn.up(3, 1)
    tn.stop("node-2")  # one of the two non-verifier nodes, which host the agents
    sc = scenarios.load("rate-limited-search-api").shortened(0.5)
    # what the scenario needs (2 agents + 1 late), not what the testnet could place (2)
    needs = (
        r"needs 3 running non-verifier nodes, one per agent \(2 \+ 1 late\); this testnet "
        r"has 2, but node-2 is not running: `gossipmind testnet start"
    )
    with pytest.raises(ConfigError, match=needs):
        Runner(tn, sc)
    out = gm(run_dir, "scenario", "rate-limited-search-api", "--short")
    assert out.returncode == 4, (out.returncode, out.stdout, out.stderr)
    assert len(out.stderr.strip().splitlines()) == 1 and "node-2" in out.stderr, out.stderr
    # node-2 back: the run goes ahead without the late agent, and says so
    tn.start("node-2")
    run = Runner(tn, sc)
    assert run.result.left_out == 1 and not [a for a in run.result.agents.values() if a.late]
    assert run.result.left_out_text() == (
        "1 of the scenario's 3 agents (1 late) left out: one per non-verifier node, and "
        "this testnet has only 2; `testnet up` with more --nodes runs them all"
    )


@pytest.mark.slow
def test_scenario_compares_the_roots_of_the_running_nodes_only(run_dir: Path) -> None:
    """A stopped verifier hosts no agent: the run goes on, and its stale store is
    not compared (the old run waited 30 s for it, then said "roots differ")."""
    tn = Testnet(run_dir)
    tn.up(3, 1, settings={"sync_interval": 1.0})
    tn.stop("node-1")
    report = run_dir.parent / "report.html"
    out = gm(run_dir, "scenario", "schema-drift", "--short", "--report", str(report))
    assert out.returncode == 0, (out.stdout, out.stderr)
    s = json.loads(report.with_suffix(".json").read_text())
    assert "node-1 not running" in out.stdout, out.stdout
    assert set(s["roots"]) == {"node-0", "node-2"} and s["converged"], s["roots"]


# -- status --------------------------------------------------------------------------------


def test_status_majority_is_that_of_the_running_nodes(run_dir: Path) -> None:
    """node-1 and node-2 stopped, one op written on node-0: node-0 converged ✓, the
    two stale stores ✗ (they had outvoted it: node-0 ✗, both stopped ones ✓)."""
    tn = Testnet(run_dir)
    tn.up(3, 1)
    tn.stop("node-1")
    tn.stop("node-2")
    before = rows(tn)["node-0"]["ops"]
    url, token = discover(Path(tn.node("node-0").dir))
    http = Http(url, token, timeout=10)
    try:
        body = encode(sample_report(template="majority test <*>", count=1)).hex()
        status, _ = http.request("POST", "/v1/ops", {"kind": "pattern.report", "body": body})
    finally:
        http.close()
    assert status == 201
    now = rows(tn)
    assert now["node-0"]["ops"] == before + 1 and now["node-0"]["state"] == "running"
    assert now["node-0"]["converged"], now["node-0"]
    assert not now["node-1"]["converged"] and not now["node-2"]["converged"], now
    assert now["node-1"]["state"] == now["node-2"]["state"] == "stopped"


# -- stop -----------------------------------------------------------------------------------


def test_stop_of_a_frozen_node_says_it_killed_it(run_dir: Path) -> None:
    tn = Testnet(run_dir)
    tn.up(2, 1)
    for timeout in ("10", "1"):  # the default, then --timeout 1
        pid = rows(tn)["node-1"]["pid"]
        os.kill(pid, signal.SIGSTOP)  # it cannot act on SIGTERM: `stop` must SIGKILL it
        out = gm(run_dir, "stop", "node-1", *(["--timeout", timeout] if timeout != "10" else []))
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert out.stdout.startswith(f"killed node-1 (process p1, pid {pid})"), out.stdout
        late = f"warning: no exit within {timeout} s of SIGTERM, so SIGKILLed: not a clean stop"
        assert late in out.stderr, out.stderr
        assert rows(tn)["node-1"]["state"] == "killed"
        if timeout == "10":
            tn.start("node-1")


def test_stop_exits_1_when_the_process_survives_sigkill(
    tmp_path: Path, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    tn = stopped_testnet(tmp_path)
    st = tn.state()
    st.procs["p0"] = ProcEntry(
        id="p0", nodes=["node-0"], pid=sleeper.pid, starttime=procs.starttime(sleeper.pid)
    )
    st.node("node-0").proc = "p0"
    save_state(tn.run_dir, st)
    # a process in uninterruptible sleep outlives SIGKILL; this one only seems to
    monkeypatch.setattr(procs, "wait_gone", lambda pids, marker, timeout: set(pids))
    out = CliRunner().invoke(cli, ["testnet", "stop", "node-0", "--run-dir", str(tn.run_dir)])
    assert out.exit_code == 1, out.output
    assert f"process p0 (pid {sleeper.pid}) survived SIGTERM and SIGKILL" in out.stderr
    assert "stopped node-0" not in out.stdout
