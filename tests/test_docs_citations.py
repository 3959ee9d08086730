"""The docs cite tests and code by name: every citation must name something that exists.

A test renamed, a module moved or a symbol gone leaves the docs pointing at
nothing (security.md cited ``core/replica.py`` (``by_seq``) long after the
replica stopped having one). Checked here:

* ``tests/<path>.py`` and ``tests/<path>.py::test_name`` (a citation may break
  after ``::`` across lines): the file exists and defines that function;
* ``<package>/<module>.py`` under ``src/gossipmind`` (``core/ops.py``, or with
  ``src/gossipmind/`` in front), and the names in backquotes in the parentheses
  that follow it (``core/ops.py`` (``MAX_OP_SIZE``, ``Op.verify_signature``)):
  the module exists and every dotted part of each name occurs in it as a word.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", ROOT / "testnet" / "README.md"]
PACKAGES = "core|net|node|store|sync|api|learn|verify|cli|bench|testnet|testing"

TEST_CITE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")
SRC_CITE = re.compile(rf"`((?:src/gossipmind/)?(?:{PACKAGES})/\w+\.py)`(?:,?\s*\(([^)]*)\))?")
NAME = re.compile(r"`([A-Za-z_][\w.]*)`")


def _text(doc: Path) -> str:
    # a citation may break after "::" (tests/x.py::\n  test_y)
    return re.sub(r"::\s*\n\s*", "::", doc.read_text(encoding="utf-8"))


def _problems() -> list[str]:
    out = []
    for doc in DOCS:
        if not doc.exists():
            continue
        text = _text(doc)
        where = doc.relative_to(ROOT)
        for m in TEST_CITE.finditer(text):
            path, test = ROOT / m.group(1), m.group(2)
            if not path.is_file():
                out.append(f"{where}: {m.group(1)} does not exist")
            elif test and not re.search(rf"^\s*(?:async )?def {test}\b", path.read_text(), re.M):
                out.append(f"{where}: {m.group(1)} has no {test}")
        for m in SRC_CITE.finditer(text):
            rel = m.group(1).removeprefix("src/gossipmind/")
            path = ROOT / "src" / "gossipmind" / rel
            if not path.is_file():
                out.append(f"{where}: src/gossipmind/{rel} does not exist")
                continue
            source = path.read_text(encoding="utf-8")
            for name in NAME.findall(m.group(2) or ""):
                missing = [p for p in name.split(".") if not re.search(rf"\b{p}\b", source)]
                if missing:
                    out.append(f"{where}: {rel} has no {name}")
    return out


def test_every_test_module_and_symbol_the_docs_cite_exists() -> None:
    assert _problems() == []


def test_the_check_sees_the_citations_of_the_docs() -> None:
    # the patterns match the forms the docs use (a check that matches nothing passes)
    text = _text(ROOT / "docs" / "security.md")
    assert len(TEST_CITE.findall(text)) > 50
    assert len(SRC_CITE.findall(text)) > 30
    cite = SRC_CITE.search("`core/ops.py` (`MAX_OP_SIZE`, `Op.verify_signature`)")
    assert cite is not None
    assert NAME.findall(cite.group(2)) == ["MAX_OP_SIZE", "Op.verify_signature"]
