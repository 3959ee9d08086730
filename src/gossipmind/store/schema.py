"""SQLite schema of a gossipmind store, its version and migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from gossipmind.core.errors import StoreError

APPLICATION_ID = 0x676D6E64  # "gmnd"
SCHEMA_VERSION = 1

DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE ops (
    ord      INTEGER PRIMARY KEY,          -- application order: a causal order
    id       BLOB NOT NULL UNIQUE,
    raw      BLOB NOT NULL,
    author   BLOB NOT NULL,
    seq      INTEGER NOT NULL,
    lamport  INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    ts       INTEGER NOT NULL
);
CREATE INDEX ops_author_seq ON ops (author, seq);
CREATE INDEX ops_kind ON ops (kind);
CREATE TABLE heads (id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE pending (id BLOB PRIMARY KEY, raw BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE rejected (
    ord    INTEGER PRIMARY KEY,
    id     BLOB NOT NULL UNIQUE,
    code   TEXT NOT NULL,
    detail TEXT NOT NULL,
    raw    BLOB
);
CREATE TABLE members (key BLOB PRIMARY KEY, doc BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE patterns (
    pattern   BLOB PRIMARY KEY,
    service   TEXT NOT NULL,
    count     INTEGER NOT NULL,
    reporters INTEGER NOT NULL,
    doc       BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE fixes (
    fix     BLOB PRIMARY KEY,
    pattern BLOB NOT NULL,
    status  TEXT NOT NULL,
    doc     BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX fixes_pattern ON fixes (pattern);
CREATE TABLE goals (goal BLOB PRIMARY KEY, active INTEGER NOT NULL, doc BLOB NOT NULL)
    WITHOUT ROWID;
CREATE TABLE equivocations (author BLOB NOT NULL, seq INTEGER NOT NULL, ids BLOB NOT NULL,
    PRIMARY KEY (author, seq)) WITHOUT ROWID;
"""

# version -> function migrating a store from (version - 1) to version.
Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: dict[int, Migration] = {}


def stamp(conn: sqlite3.Connection) -> None:
    """Mark a freshly created schema as ours, at the current version."""
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def migrate(conn: sqlite3.Connection, from_version: int) -> None:
    """Run every migration after ``from_version`` in one transaction (StoreError for
    a version no gossipmind wrote: there is no migration from it)."""
    missing = [v for v in range(from_version + 1, SCHEMA_VERSION + 1) if v not in MIGRATIONS]
    if from_version < 1 or missing:
        raise StoreError(
            f"schema version {from_version} was not written by gossipmind (no migration "
            "from it); run `gossipmind doctor`"
        )
    for version in range(from_version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version](conn)
        conn.execute(f"PRAGMA user_version = {version}")
