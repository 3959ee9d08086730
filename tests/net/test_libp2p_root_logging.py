"""py-libp2p's swarm_connection logs through the *root* logger (``logging.debug``),
which runs ``logging.basicConfig()`` behind the application's back. The transport
redirects it to a ``libp2p.*`` logger, also in a fresh process whose first
connection is what imports that module (a test in a shared pytest process cannot
see this: an earlier test has imported it already)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import hashlib, logging, sys
import trio
from gossipmind.net.gossip import make_validator
from gossipmind.net.host import open_libp2p_transport
from gossipmind.net.interface import TransportConfig

NAME = "libp2p.network.connection.swarm_connection"
NET = bytes(32)

def config(name):
    seed = hashlib.sha256(name.encode()).digest()
    return TransportConfig(seed=seed, topic=f"gossipmind/{NET.hex()}/ops/1",
                           listen="/ip4/127.0.0.1/tcp/0")

async def main():
    assert NAME not in sys.modules, "imported before the first connection"
    with trio.fail_after(30):
        async with open_libp2p_transport(config("a"), make_validator(NET)) as a, \
                open_libp2p_transport(config("b"), make_validator(NET)) as b:
            await a.connect(b.addrs()[0])
            while not b.peers():
                await trio.sleep(0.02)
            await a.disconnect(b.peer_id)
            while b.peers():
                await trio.sleep(0.02)
    module = sys.modules.get(NAME)
    print("imported", module is not None)
    print("redirected", type(getattr(module, "logging", None)).__name__)
    print("root handlers", len(logging.getLogger().handlers))

trio.run(main)
"""


def test_the_first_connection_of_a_process_does_not_log_through_the_root_logger() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "imported True" in lines, out.stdout  # the connection imported the module
    assert "redirected _ModuleLogging" in lines, out.stdout
    assert "root handlers 0" in lines, out.stdout  # no logging.basicConfig() behind our back
    assert out.stderr == "", out.stderr
