"""What this gossipmind is: its release, the git commit it runs from, and the
versions of what it writes and speaks.

``__version__`` alone did not tell releases apart (every one said 0.1.0), so an
operator of a network in the middle of a rolling upgrade could not see which
nodes ran which code (docs/operations.md §10). The commit is read from the
checkout the package runs from (``pip install -e .``, as the README's commands
install it), from ``.git`` directly, with no ``git`` process; an installed wheel
has none, and says so (``None``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gossipmind._version import __version__
from gossipmind.core.replica import FOLD_VERSION
from gossipmind.net.interface import SYNC_PROTOCOL
from gossipmind.store.schema import SCHEMA_VERSION

__all__ = ["COMMIT", "FOLD_VERSION", "SCHEMA_VERSION", "commit", "describe", "version_line"]


def commit(start: Path | None = None) -> str | None:
    """The commit (12 hex digits) of the git checkout holding ``start`` (this
    package), if any."""
    here = start or Path(__file__).resolve()
    for d in here.parents:
        git = d / ".git"
        if git.is_file():  # a worktree: "gitdir: <path>"
            text = _read(git)
            if text is None or not text.startswith("gitdir:"):
                return None
            git = (d / text.removeprefix("gitdir:").strip()).resolve()
        if git.is_dir():
            return _head(git)
    return None


def _head(git: Path) -> str | None:
    head = _read(git / "HEAD")
    if head is None:
        return None
    if not head.startswith("ref:"):
        return _sha(head)
    ref = head.removeprefix("ref:").strip()
    common = git
    if (text := _read(git / "commondir")) is not None:  # a worktree's refs are shared
        common = (git / text).resolve()
    for where in (git, common):
        if (sha := _read(where / ref)) is not None:
            return _sha(sha)
    packed = _read(common / "packed-refs") or ""
    for line in packed.splitlines():
        sha, _, name = line.partition(" ")
        if name == ref:
            return _sha(sha)
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _sha(text: str) -> str | None:
    text = text.strip()
    ok = len(text) >= 40 and all(c in "0123456789abcdef" for c in text[:40])
    return text[:12] if ok else None


COMMIT = commit()
"""Read once, when the code was loaded: a checkout updated under a running node
does not change what the node says it runs."""


def describe() -> dict[str, Any]:
    """The build, for status documents and the daemon's ``ready`` line."""
    return {
        "version": __version__,
        "commit": COMMIT,
        "fold_version": FOLD_VERSION,
        "schema_version": SCHEMA_VERSION,
        "sync_protocol": SYNC_PROTOCOL,
    }


def version_line() -> str:
    """``0.1.0 (commit 8779330abcde, fold rules 6, store schema 1)``, for ``--version``."""
    sha = COMMIT
    where = f"commit {sha}" if sha else "no git checkout"
    return f"{__version__} ({where}, fold rules {FOLD_VERSION}, store schema {SCHEMA_VERSION})"
