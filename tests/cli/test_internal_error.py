"""An internal error names what went wrong, even when it escaped a trio nursery.

A soak's first `testnet up` lost a node at start with only "internal error (a bug in
gossipmind): ExceptionGroup: Exceptions from Trio nursery (1 sub-exception)" in its
log: a race that cannot be rerun with GOSSIPMIND_DEBUG=1, and the line named nothing.
"""

from __future__ import annotations

import pytest

from gossipmind.cli import main as cli_main


def raise_group() -> None:
    inner = ExceptionGroup("inner", [ValueError("bad frame"), KeyError("k")])
    raise ExceptionGroup(
        "Exceptions from Trio nursery", [OSError(98, "Address already in use"), inner]
    )


def test_an_exception_group_names_its_leaf_exceptions(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GOSSIPMIND_DEBUG", raising=False)
    monkeypatch.setattr(cli_main, "cli", lambda **_kw: raise_group())
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == 70
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("internal error (a bug in gossipmind): ExceptionGroup: ")
    assert "OSError: [Errno 98] Address already in use" in first
    assert "ValueError: bad frame" in first and "KeyError: 'k'" in first


def test_a_plain_exception_reads_as_before(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(**_kw: object) -> None:
        raise TypeError("nope")

    monkeypatch.delenv("GOSSIPMIND_DEBUG", raising=False)
    monkeypatch.setattr(cli_main, "cli", boom)
    with pytest.raises(SystemExit):
        cli_main.main()
    assert capsys.readouterr().err.splitlines()[0] == (
        "internal error (a bug in gossipmind): TypeError: nope"
    )
