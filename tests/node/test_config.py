"""node.toml: types, ranges and overrides give clear errors, never a crash at start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from gossipmind.cli.main import cli
from gossipmind.core.errors import ConfigError
from gossipmind.node.config import NodeConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "node.toml").write_text(text)
    return tmp_path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    assert load_config(tmp_path) == NodeConfig(data_dir=tmp_path)


def test_settings_are_read(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, 'sync_interval = 1.5\nannounce = ["/ip4/203.0.113.7/tcp/4001"]\n')
    )
    assert cfg.sync_interval == 1.5 and cfg.announce == ("/ip4/203.0.113.7/tcp/4001",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cpu_budget = 2\n", "cpu_budget = 2 is out of range"),
        ("sync_interval = 0\n", "sync_interval = 0 is out of range"),
        ("api_port = 70000\n", "api_port = 70000 is out of range"),
        ("min_peers = 20\nmax_peers = 5\n", "min_peers (20) exceeds max_peers (5)"),
        ("verifier = 1\n", "wrong type"),
        ("bogus = 1\n", "unknown setting 'bogus'"),
        ('synchronous = "OFF"\n', "synchronous must be FULL or NORMAL"),
        ("sync_interval = [\n", "node.toml"),
        ("node = 1\n", "node must be a table"),
        ("[node]\nsync_interval = 1.0\n[nodes]\nverifier = true\n", "outside the [node] table"),
        ('verifier = "yes"\n[node]\nsync_interval = 1.0\n', "outside the [node] table"),
        ("[node]\nsync_interval = 0.0001\n", "sync_interval = 0.0001 is out of range"),
        ('announce = ["garbage"]\n', "announce: Invalid MultiAddr 'garbage'"),
        ('announce = ["/ip4/127.0.0.1/udp/4001"]\n', "announce: '/ip4/127.0.0.1/udp/4001' must"),
        ('announce = ["/ip4/1.2.3.4/tcp/70000"]\n', "announce: Invalid MultiAddr"),
        ('announce = ["/dns4/example.com/tcp/4001"]\n', "/ip4|ip6/<host>/tcp/<port>"),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, text))


def test_overrides_are_checked_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sync_interval"):
        NodeConfig(data_dir=tmp_path).with_overrides(sync_interval=0.0)


def test_gossipmind_node_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    write(tmp_path, "cpu_budget = 5\n")
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "node"])
    assert result.exit_code == 4 and "cpu_budget = 5 is out of range" in result.output


def test_a_config_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_bytes(b'listen = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path)
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "node"])
    assert result.exit_code == 4 and "not UTF-8" in result.output


def test_a_bad_announce_address_exits_4_like_a_bad_listen(tmp_path: Path) -> None:
    """It used to pass the config check and fail in the transport: exit 1, not 4."""
    write(tmp_path, 'announce = ["garbage"]\n')
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "node", "--no-api"])
    assert result.exit_code == 4, result.output
    assert "announce" in result.output and "'garbage'" in result.output
    with pytest.raises(ConfigError, match="announce"):
        NodeConfig(data_dir=tmp_path).with_overrides(announce=("/ip4/127.0.0.1/udp/1",))
