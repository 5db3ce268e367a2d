"""Schema migrations: numbered, recorded, forward-only."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from weall.errors import StartupError, StorageError
from weall.storage.db import open_readwrite
from weall.storage.schema import MIGRATIONS, SCHEMA_VERSION, current_version, migrate
from weall.storage.writer import Writer


@pytest.fixture
def conn(db_path: Path) -> Iterator[sqlite3.Connection]:
    connection = open_readwrite(db_path, synchronous="NORMAL")
    yield connection
    connection.close()


def recorded(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    return conn.execute(
        "SELECT version, name FROM schema_migrations ORDER BY version"
    ).fetchall()


def index_names(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index'"
    ).fetchall()
    return {name for (name,) in rows}


def test_migrations_numbered_from_1() -> None:
    assert [number for number, _, _ in MIGRATIONS] == list(
        range(1, len(MIGRATIONS) + 1)
    )


def test_schema_version_is_last_migration() -> None:
    assert MIGRATIONS[-1][0] == SCHEMA_VERSION


def test_migrate_new_database_applies_all(conn: sqlite3.Connection) -> None:
    assert migrate(conn) == list(range(1, SCHEMA_VERSION + 1))


def test_migrate_records_each_migration(conn: sqlite3.Connection) -> None:
    migrate(conn)
    assert recorded(conn) == [(number, name) for number, name, _ in MIGRATIONS]


def test_migrate_records_applied_time(conn: sqlite3.Connection) -> None:
    migrate(conn)
    times = [t for (t,) in conn.execute("SELECT applied_ms FROM schema_migrations")]
    assert all(isinstance(t, int) for t in times)
    # Milliseconds since the epoch: later than September 2020.
    assert min(times) > 1_600_000_000_000


def test_migrate_sets_user_version(conn: sqlite3.Connection) -> None:
    migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_migrate_creates_tables(conn: sqlite3.Connection) -> None:
    migrate(conn)
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'"
    ).fetchall()
    assert {name for (name,) in rows} == {
        "schema_migrations",
        "meta",
        "state",
        "state_recent",
        "blocks",
        "txs",
    }
    views = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'view'"
    ).fetchall()
    assert views == [("state_view",)]


def test_migrate_again_applies_nothing(conn: sqlite3.Connection) -> None:
    migrate(conn)
    assert migrate(conn) == []
    assert len(recorded(conn)) == SCHEMA_VERSION


def test_migrate_never_goes_back(conn: sqlite3.Connection) -> None:
    migrate(conn)
    assert migrate(conn, target=1) == []
    assert current_version(conn) == SCHEMA_VERSION


def test_migrate_to_target(conn: sqlite3.Connection) -> None:
    assert migrate(conn, target=1) == [1]
    assert current_version(conn) == 1
    assert recorded(conn) == [(1, "tables")]


def test_migrate_rejects_newer_database(conn: sqlite3.Connection) -> None:
    migrate(conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StartupError) as caught:
        migrate(conn)
    assert f"version {SCHEMA_VERSION + 1} is newer" in str(caught.value)
    assert f"this binary's {SCHEMA_VERSION}" in str(caught.value)


def test_migrate_newer_database_left_unchanged(conn: sqlite3.Connection) -> None:
    migrate(conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StartupError):
        migrate(conn)
    assert current_version(conn) == SCHEMA_VERSION + 1
    assert len(recorded(conn)) == SCHEMA_VERSION


def test_writer_migrate_rejects_newer_database(
    db_path: Path, conn: sqlite3.Connection
) -> None:
    migrate(conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    writer = Writer(db_path, synchronous="NORMAL")
    try:
        with pytest.raises(StartupError):
            writer.migrate()
    finally:
        writer.close()


def test_version_1_database_keeps_data(conn: sqlite3.Connection) -> None:
    migrate(conn, target=1)
    conn.execute("INSERT INTO meta (key, value) VALUES ('chain_id', 'weall-dev')")
    conn.execute(
        "INSERT INTO state (kind, key, value) VALUES ('post', 'p1', '{\"n\":1}')"
    )
    conn.execute(
        "INSERT INTO blocks (height, hash, header, sig, timestamp_ms, tx_count)"
        " VALUES (0, 'h0', '{}', 's', 5, 0)"
    )
    conn.executemany(
        "INSERT INTO txs (tx_id, signer, nonce, tx_type, status, envelope, received_ms,"
        " height, idx, receipt) VALUES (?, '@alice', ?, 'PROFILE_UPDATE', ?, '{}', ?, ?, ?, ?)",
        [
            ("t1", 3, "pending", 7, None, None, None),
            ("t0", 2, "pending", 6, None, None, None),
            ("tb", 1, "committed", 9, 1, 1, "{}"),
            ("ta", 0, "committed", 8, 1, 0, "{}"),
        ],
    )
    v1_columns = {
        "meta": "*",
        "state": "*",
        "blocks": "*",
        "txs": "tx_id, signer, nonce, tx_type, status, envelope, received_ms,"
        " height, idx, receipt",
    }
    before = {
        table: sorted(conn.execute(f"SELECT {columns} FROM {table}").fetchall())
        for table, columns in v1_columns.items()
    }
    assert migrate(conn) == list(range(2, SCHEMA_VERSION + 1))
    after = {
        table: sorted(conn.execute(f"SELECT {columns} FROM {table}").fetchall())
        for table, columns in v1_columns.items()
    }
    assert after == before
    # Rows are renumbered in chain order, then the pending ones as they came.
    order = conn.execute("SELECT tx_id FROM txs ORDER BY seq").fetchall()
    assert [tx_id for (tx_id,) in order] == ["ta", "tb", "t0", "t1"]


def test_version_1_database_gains_indexes(conn: sqlite3.Connection) -> None:
    migrate(conn, target=1)
    migrate(conn)
    assert {"txs_pending", "txs_block"} <= index_names(conn)
    assert current_version(conn) == SCHEMA_VERSION


def test_failed_migration_rolls_back(conn: sqlite3.Connection) -> None:
    migrate(conn, target=1)
    # An object with the name that migration 2 creates makes it fail half way.
    conn.execute("CREATE INDEX txs_pending ON txs (tx_id)")
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        migrate(conn)
    assert current_version(conn) == 1
    assert recorded(conn) == [(1, "tables")]
    assert "txs_block" not in index_names(conn)


def test_writer_migrate_wraps_sqlite_error(
    db_path: Path, conn: sqlite3.Connection
) -> None:
    migrate(conn, target=1)
    conn.execute("CREATE INDEX txs_pending ON txs (tx_id)")
    writer = Writer(db_path, synchronous="NORMAL")
    try:
        with pytest.raises(StorageError, match="migrate"):
            writer.migrate()
    finally:
        writer.close()


def test_writer_migrate_logs_versions(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="weall.storage.writer")
    writer = Writer(db_path, synchronous="NORMAL")
    try:
        writer.migrate()
    finally:
        writer.close()
    messages = [r.getMessage() for r in caplog.records]
    assert f"migration applied version={SCHEMA_VERSION} db={db_path}" in messages
