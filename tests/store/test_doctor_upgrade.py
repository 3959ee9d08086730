"""`gossipmind doctor` on a store an older release wrote (docs/operations.md §10).

The upgrade procedure runs `doctor` before the node starts. On a store whose rows
FOLD_VERSION 5 wrote (a pattern with a long operation: its fixes' scope and status
changed in 6), doctor reported each such row as an ERROR and exited 5 ("damaged or
inconsistent store"), though the node's first open rewrites them and nothing is
damaged. It now says so in one warning and exits 0; rows that differ under this
release's own stamp are still errors (tests/store/test_doctor.py).

The store is ``tests/fixtures/upgrade/fold5_store.sqlite3.gz`` (its README says how
it was made).
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from contextlib import closing
from pathlib import Path

from click.testing import CliRunner

from gossipmind.cli.main import cli
from gossipmind.core.replica import FOLD_VERSION
from gossipmind.store.doctor import EXIT_CORRUPT, diagnose
from gossipmind.store.sqlite import Store

FIXTURE = Path(__file__).parent.parent / "fixtures" / "upgrade" / "fold5_store.sqlite3.gz"


def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "kb.sqlite3"
    path.write_bytes(gzip.decompress(FIXTURE.read_bytes()))
    return path


def stamp(path: Path) -> bytes:
    with closing(sqlite3.connect(path)) as c:
        value: bytes = c.execute("SELECT value FROM meta WHERE key = 'fold'").fetchone()[0]
    return value


def test_rows_of_older_fold_rules_are_a_warning_not_damage(tmp_path: Path) -> None:
    path = old_store(tmp_path)
    assert stamp(path) == b"5:10" and FOLD_VERSION > 5
    before = path.read_bytes()
    result = CliRunner().invoke(cli, ["doctor", str(path), "--json"])
    doc = json.loads(result.output)
    assert result.exit_code == 0 and doc["healthy"], doc["findings"]
    assert path.read_bytes() == before  # read-only, as ever
    [older] = [f for f in doc["findings"] if f["check"] == "fold.rules"]
    # the 2 fix rows fold 6 changed, and (fold 7) the pattern row without its medians
    assert older["severity"] == "warning" and "3 materialised row(s)" in older["message"]
    assert "fold stamp 5:10" in older["message"] and "latency_ms_typical" in older["message"]
    assert not [f for f in doc["findings"] if f["severity"] == "error"]


def test_the_first_writing_open_rewrites_them_and_the_warning_goes(tmp_path: Path) -> None:
    path = old_store(tmp_path)
    with Store.open(path):
        pass
    assert stamp(path) == f"{FOLD_VERSION}:10".encode()
    diag = diagnose(path)
    assert not [f for f in diag.findings if f.check.startswith("fold.")], diag.findings


def test_a_row_differing_under_this_releases_stamp_is_still_damage(tmp_path: Path) -> None:
    path = old_store(tmp_path)
    with Store.open(path):
        pass
    with closing(sqlite3.connect(path)) as c, c:
        c.execute("UPDATE fixes SET status = 'accepted'")
    diag = diagnose(path)
    assert diag.exit_code == EXIT_CORRUPT
    assert {f.check for f in diag.errors} == {"fold.fixes"}


def test_a_stamp_of_this_version_with_another_count_does_not_excuse_a_row(
    tmp_path: Path,
) -> None:
    """Only another fold *version* makes differing rows "older rules": a stamp of this
    version whose op count differs (rows not rewritten after some ops) hides nothing."""
    path = old_store(tmp_path)
    with Store.open(path):
        pass
    with closing(sqlite3.connect(path)) as c, c:
        c.execute("UPDATE fixes SET status = 'accepted'")
        c.execute("UPDATE meta SET value = ? WHERE key = 'fold'", (f"{FOLD_VERSION}:9".encode(),))
    diag = diagnose(path)
    assert diag.exit_code == EXIT_CORRUPT
    assert {f.check for f in diag.errors} == {"fold.fixes"}
    assert not [f for f in diag.findings if f.check == "fold.rules"]
