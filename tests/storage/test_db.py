"""Opening connections: read-write in WAL mode, read-only with ``mode=ro``, file checks."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from weall.errors import StartupError, StorageError
from weall.storage.db import check_file, open_readonly, open_readwrite
from weall.storage.writer import Writer


def fd_flags(path: Path) -> list[int]:
    """Return the open flags of each descriptor of this process that points at ``path``."""
    flags = []
    target = str(path.resolve())
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") != target:
                continue
            with open(f"/proc/self/fdinfo/{name}") as info:
                fields = dict(line.split(":", 1) for line in info if ":" in line)
        except OSError:
            continue  # closed while listing
        flags.append(int(fields["flags"].strip(), 8))
    return flags


@pytest.fixture
def readonly(writer: Writer, db_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_readonly(db_path)
    yield conn
    conn.close()


# -- read-write connections ----------------------------------------------------------------


def test_readwrite_uses_wal(db_path: Path) -> None:
    conn = open_readwrite(db_path, synchronous="NORMAL")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


@pytest.mark.parametrize(("mode", "number"), [("FULL", 2), ("NORMAL", 1)])
def test_readwrite_sets_synchronous(db_path: Path, mode: str, number: int) -> None:
    conn = open_readwrite(db_path, synchronous=mode)
    try:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == number
    finally:
        conn.close()


def test_readwrite_enables_foreign_keys(db_path: Path) -> None:
    conn = open_readwrite(db_path, synchronous="NORMAL")
    try:
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        conn.close()


def test_readwrite_is_autocommit(db_path: Path) -> None:
    conn = open_readwrite(db_path, synchronous="NORMAL")
    try:
        conn.execute("CREATE TABLE t (a)")
        assert not conn.in_transaction
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["OFF", "EXTRA", "normal", ""])
def test_readwrite_rejects_synchronous(db_path: Path, mode: str) -> None:
    with pytest.raises(ValueError, match="FULL or NORMAL"):
        open_readwrite(db_path, synchronous=mode)


def test_readwrite_creates_parent_dir(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "weall.db"
    open_readwrite(path, synchronous="NORMAL").close()
    assert path.exists()


def test_readwrite_opens_file_read_write(db_path: Path) -> None:
    conn = open_readwrite(db_path, synchronous="NORMAL")
    try:
        assert [flag & os.O_ACCMODE for flag in fd_flags(db_path)] == [os.O_RDWR]
    finally:
        conn.close()


# -- read-only connections -------------------------------------------------------------------


def test_readonly_opens_file_o_rdonly(
    readonly: sqlite3.Connection, db_path: Path, writer: Writer
) -> None:
    # Close the writer so that the only descriptor left is the reader's.
    writer.close()
    readonly.execute("SELECT COUNT(*) FROM state").fetchone()
    assert [flag & os.O_ACCMODE for flag in fd_flags(db_path)] == [os.O_RDONLY]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO meta (key, value) VALUES ('x', 'y')",
        "UPDATE meta SET value = 'other' WHERE key = 'chain_id'",
        "DELETE FROM state",
        "CREATE TABLE extra (a)",
        "DROP TABLE txs",
        "PRAGMA user_version = 99",
    ],
)
def test_readonly_rejects_write(readonly: sqlite3.Connection, statement: str) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        readonly.execute(statement)


def test_readonly_rejects_write_without_query_only(
    readonly: sqlite3.Connection,
) -> None:
    # mode=ro rejects writes by itself, and query_only is a second guard.
    readonly.execute("PRAGMA query_only = OFF")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        readonly.execute("DELETE FROM state")


def test_readonly_write_leaves_data(
    readonly: sqlite3.Connection, writer: Writer
) -> None:
    count = readonly.execute("SELECT COUNT(*) FROM state").fetchone()[0]
    with pytest.raises(sqlite3.OperationalError):
        readonly.execute("DELETE FROM state")
    assert writer.conn.execute("SELECT COUNT(*) FROM state").fetchone()[0] == count


def test_readonly_sees_commits(readonly: sqlite3.Connection, writer: Writer) -> None:
    writer.conn.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
    assert readonly.execute("SELECT value FROM meta WHERE key = 'x'").fetchone() == (
        "y",
    )


def test_readonly_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with pytest.raises(StorageError, match="read-only"):
        open_readonly(path)
    assert not path.exists()


def test_readonly_path_with_uri_characters(tmp_path: Path) -> None:
    path = tmp_path / "a b?c#d%" / "weall.db"
    conn = open_readwrite(path, synchronous="NORMAL")
    conn.execute("CREATE TABLE t (a)")
    conn.close()
    reader = open_readonly(path)
    try:
        assert reader.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
    finally:
        reader.close()


# -- check_file ---------------------------------------------------------------------------------


def test_check_file_accepts_database(writer: Writer, db_path: Path) -> None:
    writer.checkpoint("TRUNCATE")
    check_file(db_path)


def test_check_file_missing(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="cannot read database"):
        check_file(tmp_path / "absent.db")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"SQLite format 3\x00", id="header-only"),
        pytest.param(b"\x00" * 4096, id="zeros"),
        pytest.param(b"not a database" * 500, id="text"),
    ],
)
def test_check_file_rejects_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "weall.db"
    path.write_bytes(content)
    with pytest.raises(StartupError, match="damaged") as caught:
        check_file(path)
    assert "restore a backup" in str(caught.value)


def test_check_file_rejects_truncated(writer: Writer, db_path: Path) -> None:
    writer.checkpoint("TRUNCATE")
    writer.close()
    data = db_path.read_bytes()
    db_path.write_bytes(data[: len(data) - 100])
    with pytest.raises(StartupError, match="truncated"):
        check_file(db_path)
