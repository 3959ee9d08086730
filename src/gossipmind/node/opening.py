"""Opening a node's store, and keeping the data dir's ``genesis.json`` in step with it.

``genesis.json`` is a redundant, shareable copy of the genesis the store holds.
A readable one that names another network than the store means a backup was
restored into the wrong data dir: the node refuses to start. A missing,
unreadable or damaged one (a crash while it was written, a truncated copy) is
only a warning: the store knows its genesis, so the file is written again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import trio

from gossipmind.core.errors import ConfigError
from gossipmind.core.identity import Identity
from gossipmind.node.config import NodeConfig
from gossipmind.store.datadir import (
    DataDir,
    dump_genesis,
    load_genesis,
    named_network,
    write_atomic,
)
from gossipmind.store.keyfile import read_key
from gossipmind.store.seqnos import reserve_seqnos
from gossipmind.store.sqlite import Store

log = logging.getLogger("gossipmind.node")


async def open_off_loop(
    config: NodeConfig, identity: Identity | None
) -> tuple[Identity, Store, int]:
    """The node's identity (``identity``, or its key file read), its store and the
    first gossip seqno it may use (a span reserved in the store: store/seqnos.py),
    read and opened on worker threads: opening replays every op (~4 s for
    100 000), and a passphrase costs a scrypt; the other nodes of this process,
    and its signal handling, run meanwhile. Not abandoned on cancellation: the
    store is returned, for the caller to close, and the cancellation comes after."""
    if identity is None:
        key = DataDir(config.data_dir).key
        identity = await trio.to_thread.run_sync(read_key, key, config.passphrase)
    store, start = await trio.to_thread.run_sync(_open_reserved, config)
    return identity, store, start


def _open_reserved(config: NodeConfig) -> tuple[Store, int]:
    store = open_store(config)
    try:
        return store, reserve_seqnos(store, time.time_ns())
    except BaseException:
        store.close()
        raise


def open_store(config: NodeConfig) -> Store:
    """Open the data dir's store (creating it from ``config.genesis_file`` if there
    is none yet); raise ConfigError if a genesis names another network."""
    d = DataDir(config.data_dir)
    if not d.store.exists():
        if config.genesis_file is None:
            raise ConfigError(f"{d.root} has no network: pass a genesis file to join one")
        genesis = load_genesis(config.genesis_file)
        d.ensure()
        store = Store.create(d.store, genesis, synchronous=config.synchronous)
        write_atomic(d.genesis, dump_genesis(genesis))
        return store
    # wait=0: a second node on this data dir is refused at once (writing commands
    # wait a little for each other, never for a node)
    store = Store.open(d.store, synchronous=config.synchronous, wait=0.0)
    try:
        given = config.genesis_file
        if given is not None and not _same_file(given, d.genesis):
            _refuse_other(store, load_genesis(given).id.hex(), given)
        check_genesis_file(d, store)
    except BaseException:
        store.close()
        raise
    return store


def check_genesis_file(d: DataDir, store: Store) -> None:
    """Refuse a data dir whose ``genesis.json`` names another network than its store;
    write it again from the store if it is missing or damaged."""
    try:
        named: str | None = load_genesis(d.genesis).id.hex()
    except ConfigError as exc:
        if not d.genesis.exists():
            log.warning("%s is missing: writing it again from the store", d.genesis)
        else:  # damaged: refused all the same if it still names another network
            _refuse_other(store, named_network(d.genesis), d.genesis)
            log.warning("%s; writing it again from the store", exc)
    else:
        _refuse_other(store, named, d.genesis)
        return
    try:
        write_atomic(d.genesis, dump_genesis(store.replica.genesis))
    except OSError as exc:
        log.warning("could not write %s: %s", d.genesis, exc)


def _refuse_other(store: Store, network: str | None, file: Path) -> None:
    if network is not None and network != store.replica.net.hex():
        raise ConfigError(
            f"{store.path} belongs to network {store.replica.net.hex()[:12]}, "
            f"not to {network[:12]} from {file}"
        )


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()
