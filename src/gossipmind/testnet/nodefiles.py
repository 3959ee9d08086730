"""Files the launcher writes into a node's data dir, and the one it reads back.

``node.toml`` fixes the node's listen port and bootstrap peers (and any extra
settings); ``api.json`` is written by a running node that serves the HTTP API;
``control.json`` holds the faults the node applies (partition, lossy/slow link).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from gossipmind.core.errors import ConfigError
from gossipmind.node.config import load_config
from gossipmind.testnet.state import NodeEntry, State

CONTROL_FILE = "control.json"


def api_url(data_dir: Path, pid: int | None) -> str | None:
    """The node's local HTTP API, if its running process serves one (api.json)."""
    if pid is None:
        return None
    try:
        doc = json.loads((data_dir / "api.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("pid") != pid:
        return None
    url = doc.get("url")
    return url if isinstance(url, str) else None


def bootstrap_for(node: NodeEntry, st: State) -> list[NodeEntry]:
    """A few other nodes to dial at start: node-0, the "parent" (i-1)//2 and i-1;
    node-0 itself dials node-1 and node-2; spares dial nodes 0, 1 and 2.

    Every node dials out at start, so a restarted node rejoins by itself: its
    peers may not redial it for a minute (py-libp2p's negative dial cache keeps a
    peer whose dials failed, e.g. while it was down, for 60 s).
    """
    regular = [n for n in st.nodes if not n.spare]
    if node.spare:
        picks = {0, 1, 2}
    else:
        i = regular.index(node)
        picks = {0, (i - 1) // 2, i - 1} if i > 0 else {1, 2}
    return [regular[j] for j in sorted(picks) if 0 <= j < len(regular) and regular[j] is not node]


def check_settings(settings: dict[str, Any]) -> None:
    """Fail on a bad node setting now, not later in every node process."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "node.toml").write_text(
            "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items())
        )
        load_config(Path(tmp))


def write_node_toml(node: NodeEntry, bootstrap: list[NodeEntry], settings: dict[str, Any]) -> None:
    values: dict[str, Any] = {
        "listen": f"/ip4/127.0.0.1/tcp/{node.port}",
        "bootstrap": [b.addr for b in bootstrap],
    }
    if node.role == "verifier":
        values["verifier"] = True
    values.update(settings)
    lines = ["# written by `gossipmind testnet up`"]
    lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    (Path(node.dir) / "node.toml").write_text("\n".join(lines) + "\n")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for what we write here
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to node.toml")
