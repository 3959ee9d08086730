"""What a node says it runs (node/build.py): release, git commit, fold rules and
store schema. Every release said 0.1.0, so an operator in the middle of a rolling
upgrade could not tell which nodes ran which code (the s10 upgrade review)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from gossipmind import __version__
from gossipmind.cli.main import cli
from gossipmind.core.replica import FOLD_VERSION
from gossipmind.node import build
from gossipmind.store.schema import SCHEMA_VERSION
from gossipmind.testnet.setup import prepare

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"
PKG = Path("src/gossipmind/node/build.py")  # where the package sits in a checkout


def checkout(root: Path) -> Path:
    """A checkout's layout, its package file inside it; returns the file."""
    f = root / PKG
    f.parent.mkdir(parents=True)
    f.write_text("")
    return f


def this_checkout() -> str | None:
    """The commit of the checkout the tests run from, as git itself reads it."""
    root = Path(build.__file__).resolve().parents[3]
    if not (root / ".git").exists() or shutil.which("git") is None:
        return None
    out = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()[:12]


def test_the_commit_is_read_as_git_reads_it() -> None:
    assert this_checkout() == build.COMMIT


@pytest.mark.parametrize("layout", ["loose", "packed", "detached"])
def test_a_branch_a_packed_ref_and_a_detached_head(tmp_path: Path, layout: str) -> None:
    f = checkout(tmp_path)
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    if layout == "detached":
        (git / "HEAD").write_text(SHA + "\n")
    else:
        (git / "HEAD").write_text("ref: refs/heads/main\n")
    if layout == "loose":
        (git / "refs" / "heads" / "main").write_text(SHA + "\n")
    if layout == "packed":
        (git / "packed-refs").write_text(
            f"# pack-refs with: peeled fully-peeled sorted\n{OTHER} refs/heads/dev\n"
            f"{SHA} refs/heads/main\n"
        )
    assert build.commit(f) == SHA[:12]


def test_a_worktree_reads_the_shared_refs(tmp_path: Path) -> None:
    main_git = tmp_path / "repo" / ".git"
    (main_git / "refs" / "heads").mkdir(parents=True)
    (main_git / "refs" / "heads" / "review").write_text(SHA + "\n")
    wt_git = main_git / "worktrees" / "wt"
    wt_git.mkdir(parents=True)
    (wt_git / "HEAD").write_text("ref: refs/heads/review\n")
    (wt_git / "commondir").write_text("../..\n")
    f = checkout(tmp_path / "wt")
    (tmp_path / "wt" / ".git").write_text(f"gitdir: {wt_git}\n")
    assert build.commit(f) == SHA[:12]


@pytest.mark.parametrize("head", ["", "ref: refs/heads/gone\n", "not a sha\n", "gitdir-file"])
def test_no_commit_rather_than_a_wrong_one(tmp_path: Path, head: str) -> None:
    f = checkout(tmp_path)
    if head == "gitdir-file":
        (tmp_path / ".git").write_text("garbage\n")
    else:
        (tmp_path / ".git").mkdir()
        if head:
            (tmp_path / ".git" / "HEAD").write_text(head)
    assert build.commit(f) is None


def test_version_names_the_commit_and_what_the_node_writes() -> None:
    out = CliRunner().invoke(cli, ["--version"])
    assert out.exit_code == 0
    where = f"commit {build.COMMIT}" if build.COMMIT else "no git checkout"
    assert out.output == (
        f"gossipmind, version {__version__} ({where}, fold rules {FOLD_VERSION}, "
        f"store schema {SCHEMA_VERSION})\n"
    )


def test_a_running_node_says_what_it_runs(tmp_path: Path) -> None:
    """The ready line, GET /v1/status and the metrics' gossipmind_info, of a real node."""
    spec = prepare(tmp_path, 1, 0)[0]
    cmd = [sys.executable, "-c", "from gossipmind.cli.main import main; main()"]
    cmd += ["--data-dir", str(spec.dir), "node", "--api-port", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    want = {
        "version": __version__,
        "commit": this_checkout(),
        "fold_version": FOLD_VERSION,
        "schema_version": SCHEMA_VERSION,
        "sync_protocol": "/gossipmind/sync/1.0.0",
    }
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["event"] == "ready" and ready["build"] == want, ready
            token = (spec.dir / "api.token").read_text().strip()
            auth = {"Authorization": f"Bearer {token}"}
            req = urllib.request.Request(ready["api"] + "/v1/status", headers=auth)
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert json.load(resp)["build"] == want
            req = urllib.request.Request(ready["api"] + "/v1/metrics", headers=auth)
            with urllib.request.urlopen(req, timeout=10) as resp:
                info = [
                    x for x in resp.read().decode().splitlines() if x.startswith("gossipmind_info{")
                ]
            assert len(info) == 1 and f'commit="{want["commit"] or ""}"' in info[0]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
