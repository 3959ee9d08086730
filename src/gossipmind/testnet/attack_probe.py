"""What an attack measures on the honest nodes of a testnet (see :mod:`.attack`).

Everything here reads what a node exposes anyway: its local HTTP API
(``GET /v1/status``, ``POST /v1/ops``, token in its data dir), its SQLite file
(read-only, WAL readers never block the node) and ``/proc/<pid>/status`` for the
resident memory of its process. Blocking calls; the async attack runs them in a
worker thread.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gossipmind.core import encoding
from gossipmind.core.errors import ConfigError, GossipmindError, NetworkError
from gossipmind.store.datadir import DataDir
from gossipmind.store.queries import Reader
from gossipmind.testnet import nodefiles
from gossipmind.testnet.launcher import Testnet

API_TIMEOUT = 10.0


class NodeApi:
    """A node's local HTTP API (stdlib only: the testnet layer does not import the SDK)."""

    def __init__(self, url: str, token: str, timeout: float = API_TIMEOUT) -> None:
        rest = url.split("://", 1)[-1].rstrip("/")
        host, _, port = rest.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            raise ConfigError(f"a node API must be on loopback, not {host}")
        self.host, self.port, self.token, self.timeout = host, int(port), token, timeout

    @classmethod
    def of(cls, tn: Testnet, name: str) -> NodeApi:
        st = tn.state()
        node = st.node(name)
        proc = st.proc_of(node)
        url = nodefiles.api_url(Path(node.dir), proc.pid if proc else None)
        if url is None:
            raise ConfigError(f"{node.name} serves no API (is it running?)")
        token = DataDir(Path(node.dir)).token.read_text().strip()
        return cls(url, token)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise NetworkError(f"node API {self.host}:{self.port} unreachable: {exc}") from exc
        finally:
            conn.close()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError as exc:
            raise NetworkError(f"node API sent invalid JSON ({resp.status})") from exc
        if resp.status >= 400:
            detail = (
                doc.get("error") if isinstance(doc, dict) else raw[:200].decode(errors="replace")
            )
            raise NetworkError(f"{method} {path}: HTTP {resp.status}: {detail}")
        return doc

    def status(self) -> dict[str, Any]:
        doc = self.request("GET", "/v1/status")
        if not isinstance(doc, dict):
            raise NetworkError("GET /v1/status did not answer a JSON object")
        return doc

    def write(self, kind: str, body: dict[str, Any]) -> bytes:
        """Have the node sign and publish an op; its id."""
        doc = self.request("POST", "/v1/ops", {"kind": kind, "body": encoding.encode(body).hex()})
        return bytes.fromhex(doc["op"])


# -- memory --------------------------------------------------------------------------


def proc_memory(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a process in KiB, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    if "VmRSS" not in values:
        return None
    return values["VmRSS"], values.get("VmHWM", values["VmRSS"])


# -- snapshots ------------------------------------------------------------------------


@dataclass
class NodeView:
    """One honest node at one moment, as its API and its process show it."""

    name: str
    pid: int | None
    serving: bool
    error: str = ""
    ops: int = 0
    pending: int = 0
    pending_evicted: int = 0
    rejected: int = 0
    root: str = ""
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    gossip_rejected: dict[str, int] = field(default_factory=dict)
    gossip_accepted: int = 0
    sync: dict[str, Any] = field(default_factory=dict)
    rss_kib: int = 0
    hwm_kib: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def view(tn: Testnet, name: str) -> NodeView:
    st = tn.state()
    proc = st.proc_of(st.node(name))
    pid = proc.pid if proc is not None and tn.alive(proc) else None
    out = NodeView(name=name, pid=pid, serving=False)
    mem = proc_memory(pid) if pid else None
    if mem:
        out.rss_kib, out.hwm_kib = mem
    try:
        s = NodeApi.of(tn, name).status()
    except (GossipmindError, OSError) as exc:
        out.error = str(exc)
        return out
    counters = s.get("counters", {})
    out.serving = True
    out.ops, out.pending, out.rejected = s["ops"], s["pending"], s["rejected"]
    out.root = s["root"]
    out.pending_evicted = int(s.get("pending_evicted", 0))
    out.rejected_by_reason = dict(counters.get("rejected_by_reason", {}))
    out.gossip_rejected = dict(s.get("gossip_rejected", {}))
    out.gossip_accepted = int(s.get("gossip_accepted", 0))
    out.sync = dict(s.get("sync", {}))
    return out


def views(tn: Testnet, names: list[str]) -> dict[str, NodeView]:
    return {n: view(tn, n) for n in names}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Per-key growth of a counter map (keys that did not grow are left out)."""
    out = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {k: v for k, v in sorted(out.items()) if v}


# -- checks over the stores ----------------------------------------------------------


def has_op(tn: Testnet, name: str, op_id: bytes) -> bool:
    path = DataDir(Path(tn.node(name).dir)).store
    try:
        with Reader(path) as r:
            row = r.conn.execute("SELECT 1 FROM ops WHERE id = ?", (op_id,)).fetchone()
    except (GossipmindError, OSError):
        return False
    return row is not None


def wait_for(cond: Callable[[], bool], timeout: float, every: float = 0.1) -> float | None:
    """Seconds until ``cond()`` held, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - start
        if time.monotonic() - start >= timeout:
            return None
        time.sleep(every)


def one_root(tn: Testnet, names: list[str]) -> bool:
    roots = set(tn.roots(names).values())
    return len(roots) == 1 and None not in roots
