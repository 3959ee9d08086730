"""Architecture rules that keep the codebase navigable (DESIGN.md §3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "gossipmind"


def test_layers_only_import_downward_and_only_net_imports_libp2p() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run(
        [exe, "--no-cache"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=SRC.parents[1],
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "broken" in out.stdout and "0 broken" in out.stdout


def test_modules_stay_small() -> None:
    big = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not big, f"modules over 600 lines: {big}"


def test_importing_gossipmind_does_not_import_libp2p_or_the_node() -> None:
    code = (
        "import sys, gossipmind; "
        "bad = [m for m in sys.modules if m.startswith(('libp2p', 'gossipmind.node', "
        "'gossipmind.net', 'trio', 'sqlite3'))]; print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_core_and_sync_do_no_io() -> None:
    forbidden = (
        "import time",
        "import os",
        "import socket",
        "import random",
        "import sqlite3",
        "import trio",
        "datetime.now",
        "open(",
    )
    for package in ("core", "sync"):
        for path in (SRC / package).rglob("*.py"):
            text = path.read_text()
            for word in forbidden:
                assert word not in text, f"{path.relative_to(SRC)} uses {word!r}"
