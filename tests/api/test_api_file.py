"""api.json: how a client finds its node's API. It must never name a server that
is gone: whatever listens on that port now would get the bearer token (and could
fake the node's answers). Written atomically and private, with the pid; removed
when the API stops, however it stops; refused by clients when its pid is gone."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from conftest import fleet

from gossipmind.api.client import Client
from gossipmind.api.server import ensure_token, serve_api
from gossipmind.api.transport import NodeNotFound, discover
from gossipmind.core.errors import ConfigError, NetworkError


def gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    code = "import os; print(os.getpid())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout)


async def test_api_json_is_private_names_the_pid_and_goes_when_the_api_stops(
    tmp_path: Path,
) -> None:
    async with fleet(tmp_path, 1, 0) as (r,):
        path = r.spec.dir / "api.json"
        assert json.loads(path.read_text()) == {"url": r.url, "pid": os.getpid()}
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert discover(r.spec.dir)[0] == r.url
        assert [p.name for p in r.spec.dir.iterdir() if p.name.endswith(".tmp")] == []
    assert not path.exists()


async def test_an_api_that_fails_to_start_leaves_no_api_json(tmp_path: Path) -> None:
    """A stale api.json (from a process killed before it could remove it) goes too."""
    async with fleet(tmp_path, 1, 0, api=False) as (r,):
        stale = r.spec.dir / "api.json"
        stale.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": os.getpid()}))
        token = r.spec.dir / "api.token"
        ensure_token(token)
        os.chmod(token, 0o644)
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConfigError, match="must be 0600"):
                await nursery.start(serve_api, r.node)
        assert not stale.exists()


def test_an_api_json_of_a_process_that_is_gone_is_refused(tmp_path: Path) -> None:
    (tmp_path / "api.token").write_text("t" * 40 + "\n")
    api = tmp_path / "api.json"
    api.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": gone_pid()}))
    with pytest.raises(NodeNotFound, match="stale"):
        discover(tmp_path)
    client = Client(tmp_path, stream=False)  # the SDK: a node that is down, not an error
    try:
        with pytest.raises(NetworkError):
            client.count_failures(b"\x02" * 32)
        assert client.stats.errors == []
    finally:
        client.close()
    for doc in ({"url": "http://127.0.0.1:9"}, {"url": "http://127.0.0.1:9", "pid": "1"}):
        api.write_text(json.dumps(doc))  # no usable pid: a broken file, said as such
        with pytest.raises(ConfigError, match="no url and pid") as info:
            discover(tmp_path)
        assert not isinstance(info.value, NodeNotFound)
    api.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": os.getpid()}))
    assert discover(tmp_path) == ("http://127.0.0.1:9", "t" * 40)
