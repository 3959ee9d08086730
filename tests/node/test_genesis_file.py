"""The data dir's genesis.json is a redundant copy of the store's genesis: a damaged or
missing one is a warning and is written again (atomically); one that names another
network than the store still stops the node (a backup restored into the wrong dir)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import trio

from gossipmind.core.errors import ConfigError
from gossipmind.net.fake import FakeNetwork
from gossipmind.node.config import NodeConfig
from gossipmind.node.node import open_node
from gossipmind.store import datadir
from gossipmind.store.datadir import load_genesis
from gossipmind.testnet.setup import prepare


def damaged(text: str) -> dict[str, bytes]:
    return {
        "empty": b"",  # a crash during the old write_text
        "truncated": text.encode()[: len(text) // 2],
        "not utf-8": b"\xff\xfe\x00garbage",
        "wrong op": json.dumps({**json.loads(text), "op": "00"}).encode(),
        "deep": b"[" * 100_000,  # json.loads raised RecursionError: the node crashed
        "deep network": b'{"network": ' + b"[" * 100_000,
        "huge": b" " * (datadir.MAX_GENESIS_FILE + 1),
    }


DAMAGES = ["empty", "truncated", "not utf-8", "wrong op", "deep", "deep network", "huge"]


@pytest.mark.parametrize("damage", [*DAMAGES, "missing"])
async def test_a_damaged_genesis_json_is_a_warning_and_is_written_again(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    d = prepare(tmp_path, 1, 0)[0].dir
    good = (d / "genesis.json").read_text()
    if damage == "missing":
        (d / "genesis.json").unlink()
    else:
        (d / "genesis.json").write_bytes(damaged(good)[damage])
    cfg = NodeConfig(data_dir=d, synchronous="NORMAL", learn=False)
    with caplog.at_level(logging.WARNING, logger="gossipmind.node"), trio.fail_after(10):
        async with open_node(cfg, fake=FakeNetwork(seed=1)) as node:  # it used to exit 4
            net = node.net
    assert any("genesis.json" in r.getMessage() for r in caplog.records)
    assert (d / "genesis.json").read_text() == good
    assert load_genesis(d / "genesis.json").id == net


async def test_a_damaged_genesis_json_that_names_another_network_is_refused(
    tmp_path: Path,
) -> None:
    mine = prepare(tmp_path / "a", 1, 0)[0].dir
    other = json.loads((prepare(tmp_path / "b", 1, 0)[0].dir / "genesis.json").read_text())
    text = json.dumps({**other, "op": other["op"][:40]})  # readable: names its network
    (mine / "genesis.json").write_text(text)
    cfg = NodeConfig(data_dir=mine, synchronous="NORMAL", learn=False)
    with pytest.raises(ConfigError, match="belongs to network"):
        async with open_node(cfg, fake=FakeNetwork(seed=1)):
            pass
    assert (mine / "genesis.json").read_text() == text  # left as it was


async def test_the_genesis_file_of_a_new_store_is_written_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = prepare(tmp_path, 2, 0)[1]
    (spec.dir / "kb.sqlite3").unlink()  # a data dir that joins on its first run
    genesis = tmp_path / "genesis.json"
    (spec.dir / "genesis.json").unlink()
    replaced: list[tuple[str, str]] = []
    real = os.replace

    def spy(src: str | Path, dst: str | Path) -> None:
        replaced.append((Path(src).name, Path(dst).name))
        real(src, dst)

    monkeypatch.setattr(datadir.os, "replace", spy)
    cfg = NodeConfig(data_dir=spec.dir, genesis_file=genesis, synchronous="NORMAL", learn=False)
    async with open_node(cfg, fake=FakeNetwork(seed=1)):
        pass
    assert [r for r in replaced if r[1] == "genesis.json"] == [
        (f".genesis.json.{os.getpid()}.tmp", "genesis.json")
    ]
    assert (spec.dir / "genesis.json").read_text() == genesis.read_text()
