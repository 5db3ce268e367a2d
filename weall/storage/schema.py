"""Schema and migrations.

Migrations are numbered, forward-only and recorded in ``schema_migrations``;
``PRAGMA user_version`` mirrors the latest one so a read-only reader can check
it cheaply. A database whose version is newer than ``SCHEMA_VERSION`` comes
from a newer binary and is refused.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Final

from weall.errors import StartupError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "current_version", "migrate"]

Migration = tuple[int, str, Callable[[sqlite3.Connection], None]]


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the migration's transaction first.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v1_tables(conn: sqlite3.Connection) -> None:
    _run_script(
        conn,
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE state (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (kind, key)
        ) WITHOUT ROWID;
        CREATE TABLE blocks (
            height INTEGER PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            header BLOB NOT NULL,
            sig TEXT NOT NULL,
            timestamp_ms INTEGER NOT NULL,
            tx_count INTEGER NOT NULL
        );
        CREATE TABLE txs (
            tx_id TEXT PRIMARY KEY,
            signer TEXT NOT NULL,
            nonce INTEGER NOT NULL,
            tx_type TEXT NOT NULL,
            status TEXT NOT NULL,
            envelope BLOB NOT NULL,
            received_ms INTEGER NOT NULL,
            height INTEGER,
            idx INTEGER,
            receipt BLOB
        ) WITHOUT ROWID;
        """,
    )


def _v2_tx_indexes(conn: sqlite3.Connection) -> None:
    # Pending transactions are looked up by signer and nonce at admission and
    # at every block; committed ones by their place in a block.
    _run_script(
        conn,
        """
        CREATE INDEX txs_pending ON txs (signer, nonce) WHERE status = 'pending';
        CREATE UNIQUE INDEX txs_block ON txs (height, idx) WHERE height IS NOT NULL;
        """,
    )


def _v3_recent_state(conn: sqlite3.Connection) -> None:
    # Blocks write their state changes to the small state_recent table, so a
    # commit touches about as many pages with a large state as with a small
    # one. The writer folds them into state between blocks. A NULL value
    # marks a deleted entry until the fold. Readers read state_view.
    _run_script(
        conn,
        """
        CREATE TABLE state_recent (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB,
            PRIMARY KEY (kind, key)
        ) WITHOUT ROWID;
        CREATE VIEW state_view AS
            SELECT kind, key, value FROM state_recent WHERE value IS NOT NULL
            UNION ALL
            SELECT kind, key, value FROM state AS s WHERE NOT EXISTS (
                SELECT 1 FROM state_recent AS r WHERE r.kind = s.kind AND r.key = s.key
            );
        """,
    )


def _v4_txs_in_arrival_order(conn: sqlite3.Connection) -> None:
    # Keyed by tx id, a transaction's row sat on a page of its own in a large
    # table, so committing a block rewrote about one page per transaction.
    # Stored in arrival order, a block's rows share a few adjacent pages;
    # the tx id index is small and is written at admission.
    _run_script(
        conn,
        """
        CREATE TABLE txs_by_arrival (
            seq INTEGER PRIMARY KEY,
            tx_id TEXT NOT NULL UNIQUE,
            signer TEXT NOT NULL,
            nonce INTEGER NOT NULL,
            tx_type TEXT NOT NULL,
            status TEXT NOT NULL,
            envelope BLOB NOT NULL,
            received_ms INTEGER NOT NULL,
            height INTEGER,
            idx INTEGER,
            receipt BLOB
        );
        INSERT INTO txs_by_arrival (tx_id, signer, nonce, tx_type, status, envelope,
                                    received_ms, height, idx, receipt)
            SELECT tx_id, signer, nonce, tx_type, status, envelope,
                   received_ms, height, idx, receipt
            FROM txs ORDER BY height IS NULL, height, idx, received_ms, tx_id;
        DROP TABLE txs;
        ALTER TABLE txs_by_arrival RENAME TO txs;
        CREATE INDEX txs_pending ON txs (signer, nonce) WHERE status = 'pending';
        CREATE UNIQUE INDEX txs_block ON txs (height, idx) WHERE height IS NOT NULL;
        """,
    )


MIGRATIONS: Final[tuple[Migration, ...]] = (
    (1, "tables", _v1_tables),
    (2, "tx indexes", _v2_tx_indexes),
    (3, "recent state", _v3_recent_state),
    (4, "txs in arrival order", _v4_txs_in_arrival_order),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]


def current_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, *, target: int = SCHEMA_VERSION) -> list[int]:
    """Apply the migrations above the database's version, each in its own transaction.

    Returns the versions applied. The caller holds the producer lock.
    """
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise StartupError(
            f"database schema version {version} is newer than this binary's "
            f"{SCHEMA_VERSION}; run a newer weall or restore a backup made by this version"
        )
    applied = []
    for number, name, step in MIGRATIONS:
        if number <= version or number > target:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if number == 1:
                conn.execute(
                    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_ms INTEGER NOT NULL)"
                )
            step(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)",
                (number, name, int(time.time() * 1000)),
            )
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(number)
    return applied
