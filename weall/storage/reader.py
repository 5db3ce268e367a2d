"""Read-only access for the api and the other actors.

``ReadPool.run(fn)`` calls ``fn(conn)`` in a worker thread inside one short
read transaction, so the reads it makes see one committed state and the
snapshot is released at once, which lets checkpoints make progress.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from weall.errors import StorageError
from weall.storage.db import open_readonly

__all__ = ["ReadPool", "read_once"]

T = TypeVar("T")


class ReadPool:
    """Per-thread read-only connections to one database."""

    def __init__(self, path: Path, *, threads: int = 4) -> None:
        self.path = path
        self._local = threading.local()
        self._limiter = trio.CapacityLimiter(threads)
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_readonly(self.path)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"read {self.path}: {exc}") from exc

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await trio.to_thread.run_sync(self.run_sync, fn, limiter=self._limiter)

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


def read_once(path: Path, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Open a read-only connection, run ``fn`` in one transaction, close it."""
    conn = open_readonly(path)
    try:
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StorageError(f"read {path}: {exc}") from exc
    finally:
        conn.close()
