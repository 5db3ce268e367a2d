"""Read-only access: the thread pool of the api and one-shot reads."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import Chain

from weall.errors import StorageError
from weall.protocol.block import BlockResult
from weall.storage import queries
from weall.storage.reader import ReadPool, read_once
from weall.storage.writer import Writer

CommitBlock = Callable[..., BlockResult]


def count_state(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM state").fetchone()[0])


@pytest.fixture
def pool(writer: Writer, db_path: Path) -> Iterator[ReadPool]:
    read_pool = ReadPool(db_path, threads=2)
    yield read_pool
    read_pool.close()


async def test_pool_run_reads(pool: ReadPool, chain: Chain) -> None:
    head = await pool.run(queries.head_header)
    assert head["hash"] == chain.genesis.hash


async def test_pool_run_rejects_write(pool: ReadPool) -> None:
    def write(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM state")

    with pytest.raises(StorageError, match="readonly"):
        await pool.run(write)


async def test_pool_sees_new_commits(
    pool: ReadPool, chain: Chain, commit: CommitBlock
) -> None:
    def read_post(conn: sqlite3.Connection) -> dict[str, Any] | None:
        return queries.SqliteState(conn).get("post", env.tx_id)

    env = chain.tx("@alice", "CONTENT_POST_CREATE", {"body": "x"})
    assert await pool.run(read_post) is None
    commit(env)
    assert (await pool.run(read_post))["body"] == "x"


async def test_pool_run_is_one_snapshot(
    pool: ReadPool, writer: Writer, chain: Chain
) -> None:
    block = chain.block()

    def read_twice(conn: sqlite3.Connection) -> tuple[int, int]:
        first = queries.head_header(conn)["height"]
        writer.commit_block(block)  # commits while the read transaction is open
        second = queries.head_header(conn)["height"]
        return first, second

    assert await pool.run(read_twice) == (0, 0)
    assert (await pool.run(queries.head_header))["height"] == 1


async def test_pool_runs_concurrently(pool: ReadPool) -> None:
    results: list[int] = []

    async def read() -> None:
        results.append(await pool.run(count_state))

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(read)
    assert len(set(results)) == 1
    assert len(results) == 6


async def test_pool_close_closes_connections(pool: ReadPool) -> None:
    await pool.run(count_state)
    connections = list(pool._connections)
    pool.close()
    with pytest.raises(sqlite3.ProgrammingError):
        connections[0].execute("SELECT 1")


def test_pool_missing_database(tmp_path: Path) -> None:
    pool = ReadPool(tmp_path / "absent.db")
    with pytest.raises(StorageError):
        pool.run_sync(count_state)


def test_read_once_reads(writer: Writer, db_path: Path) -> None:
    assert read_once(db_path, count_state) == count_state(writer.conn)


def test_read_once_rejects_write(writer: Writer, db_path: Path) -> None:
    def write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('a', 'b')")

    with pytest.raises(StorageError, match="readonly"):
        read_once(db_path, write)


def test_read_once_missing_database(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        read_once(tmp_path / "absent.db", count_state)
