"""`gossipmind node` runs on a passphrase-encrypted key (a real process), and says
clearly when the passphrase is missing or wrong."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gossipmind.store.keyfile import key_is_encrypted, read_key

PASSPHRASE = "correct horse battery staple"


def gossipmind(*args: str) -> list[str]:
    return [sys.executable, "-c", "from gossipmind.cli.main import main; main()", *args]


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A data dir whose key is encrypted, its network created; the passphrase file."""
    root = tmp_path_factory.mktemp("encrypted")
    secret = root / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o600)
    data = root / "d"
    init = subprocess.run(
        gossipmind("--data-dir", str(data), "init", "--passphrase-file", str(secret)),
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    key = next(ln.split()[1] for ln in init.stdout.splitlines() if ln.startswith("identity"))
    env = {**os.environ, "GOSSIPMIND_PASSPHRASE": PASSPHRASE}
    subprocess.run(
        gossipmind("--data-dir", str(data), "network", "create", "--name", "enc"),
        capture_output=True, text=True, timeout=60, check=True, env=env,
    )  # fmt: skip
    assert key_is_encrypted(data / "identity.key")
    assert read_key(data / "identity.key", PASSPHRASE).public.hex() == key
    return data, secret, key


def node_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "GOSSIPMIND_PASSPHRASE"}


def test_the_node_runs_on_an_encrypted_key(encrypted: tuple[Path, Path, str]) -> None:
    data, secret, key = encrypted
    cmd = gossipmind(
        "--data-dir", str(data), "node", "--passphrase-file", str(secret),
        "--listen", "/ip4/127.0.0.1/tcp/0", "--no-api",
    )  # fmt: skip
    log = secret.with_name("node.log")
    with (
        log.open("w") as stderr,
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=node_env()
        ) as proc,
    ):
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["event"] == "ready" and ready["key"] == key
            assert ready["addrs"][0].startswith("/ip4/127.0.0.1/tcp/")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize(
    ("passphrase", "message"),
    [
        (None, "error: key file is encrypted: a passphrase is required"),
        ("not it", "error: wrong passphrase for the key file"),
    ],
)
def test_a_missing_or_wrong_passphrase_is_one_clear_line(
    encrypted: tuple[Path, Path, str], tmp_path: Path, passphrase: str | None, message: str
) -> None:
    data, _, _ = encrypted
    args = ["--data-dir", str(data), "node", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-api"]
    if passphrase is not None:
        wrong = tmp_path / "wrong"
        wrong.write_text(passphrase)
        args += ["--passphrase-file", str(wrong)]
    out = subprocess.run(
        gossipmind(*args), check=False, capture_output=True, text=True, timeout=60, env=node_env()
    )
    assert out.returncode == 6
    assert out.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in out.stderr
