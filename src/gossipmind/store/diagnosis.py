"""The findings of `gossipmind doctor` and the exit status they give."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ERROR, WARNING, INFO = "error", "warning", "info"
EXIT_UNREADABLE = 1  # the store could not be read (I/O, disk full, permissions): not checked
EXIT_NOT_FOUND = 3  # no data directory there: a wrong path, not damage
EXIT_NOT_A_STORE = 4  # the file named is not a gossipmind store: a wrong file, not damage
EXIT_CORRUPT = 5  # the store is damaged or inconsistent
EXIT_UNSAFE = 6  # only file permissions are wrong
MAX_LINES_PER_CHECK = 20
UNREADABLE = "store.open"  # the check of a store that could not be opened or read
NO_DATA_DIR = "datadir"  # the path names no data directory
NOT_A_STORE = "store.file"  # the file named is not a gossipmind store


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | info
    check: str  # a stable name, e.g. "op.signature", "fold.fixes", "perm.key"
    message: str
    ref: bytes | None = None  # the op, pattern, fix, goal or key concerned


@dataclass
class Diagnosis:
    data_dir: Path
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    error_count: int = 0  # every error, listed or only counted
    _per_check: Counter[str] = field(default_factory=Counter)

    def add(self, severity: str, check: str, message: str, ref: bytes | None = None) -> None:
        """Record a finding; past MAX_LINES_PER_CHECK of one check, only count them."""
        self._per_check[check] += 1
        self.error_count += severity == ERROR
        if self._per_check[check] <= MAX_LINES_PER_CHECK:
            self.findings.append(Finding(severity, check, message, ref))
        elif self._per_check[check] == MAX_LINES_PER_CHECK + 1:
            self.findings.append(Finding(severity, check, f"more {check} problems (not listed)"))

    def error(self, check: str, message: str, ref: bytes | None = None) -> None:
        self.add(ERROR, check, message, ref)

    def count(self, check: str) -> int:
        return self._per_check[check]

    def merge(self, other: Diagnosis) -> None:
        self.findings += other.findings
        self.error_count += other.error_count
        self._per_check.update(other._per_check)
        self.stats.update(other.stats)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def healthy(self) -> bool:
        return not self.errors

    @property
    def exit_code(self) -> int:
        """0 healthy; 6 only unsafe permissions; 1 the store could not be read (a
        full disk, permissions, a read-only filesystem: not damage, and nothing
        was checked); 3 no data directory there and 4 the file named is not a
        gossipmind store (a wrong path or file: nothing checked, not damage);
        5 damaged or inconsistent."""
        errors = self.errors
        if not errors:
            return 0
        checks = {f.check for f in errors}
        if NO_DATA_DIR in checks:
            return EXIT_NOT_FOUND
        if NOT_A_STORE in checks:
            return EXIT_NOT_A_STORE
        if all(f.check.startswith("perm.") for f in errors):
            return EXIT_UNSAFE
        if all(f.check.startswith("perm.") or f.check == UNREADABLE for f in errors):
            return EXIT_UNREADABLE
        return EXIT_CORRUPT

    def to_doc(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "healthy": self.healthy,
            "exit_code": self.exit_code,
            "findings": [
                {"severity": f.severity, "check": f.check, "message": f.message, "ref": f.ref}
                for f in self.findings
            ],
            "errors": self.error_count,
            "problems": dict(sorted(self._per_check.items())),
            "stats": self.stats,
        }
