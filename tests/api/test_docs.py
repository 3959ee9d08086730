"""docs/sdk.md: the payment-agent example runs as written against a real node."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gossipmind.core.policy import Policy
from gossipmind.learn.patterns import Failure
from gossipmind.testing.nodethread import NodeThread

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"


def example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    return next(b for b in blocks if "def pay(" in b)


def test_payment_example_recovers_with_an_idempotency_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failure = Failure(
        "payments",
        "charge",
        "TimeoutError",
        "charge for someone@example.com timed out after 30000 ms",
    )
    with NodeThread(tmp_path, failure, Policy(scope_risk={})) as nt:
        monkeypatch.setenv("GOSSIPMIND_HOME", str(nt.dir))
        namespace: dict[str, object] = {}
        exec(compile(example(), str(DOC), "exec"), namespace)  # the doc's own code
        namespace["client"].close()  # type: ignore[attr-defined]
    assert capsys.readouterr().out.strip() == "succeeded True"
