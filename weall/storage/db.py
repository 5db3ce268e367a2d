"""Opening SQLite connections.

Connections run in autocommit mode (``isolation_level=None``) and every
caller writes its own ``BEGIN``, so a transaction's extent is always visible.
Read-only connections open the file with ``mode=ro``: SQLite then opens it
``O_RDONLY`` and rejects any write. Only ``weall.storage.writer`` calls
``open_readwrite``.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Final
from urllib.parse import quote

from weall.errors import StartupError, StorageError, StorageFullError

__all__ = [
    "BUSY_TIMEOUT_MS",
    "check_file",
    "open_readonly",
    "open_readwrite",
    "translate_error",
]

BUSY_TIMEOUT_MS: Final = 5000
SQLITE_HEADER: Final = b"SQLite format 3\x00"


def open_readonly(path: Path, *, query_only: bool = True) -> sqlite3.Connection:
    """Open ``path`` with ``mode=ro``.

    ``query_only=False`` is for ``VACUUM INTO``, which writes only the target
    file but which ``PRAGMA query_only`` would reject.
    """
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if query_only:
            conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {path} read-only: {exc}") from exc
    return conn


def open_readwrite(path: Path, *, synchronous: str) -> sqlite3.Connection:
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous must be FULL or NORMAL (got {synchronous})")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StorageError(f"{path}: journal_mode WAL not available (got {mode})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        raise translate_error(exc, f"open {path}") from exc
    return conn


def translate_error(exc: sqlite3.Error, operation: str) -> StorageError:
    """Map an SQLite error to ``StorageFullError`` or ``StorageError``."""
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc)
    if code == sqlite3.SQLITE_FULL or "database or disk is full" in text:
        return StorageFullError(f"{operation}: disk full")
    if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOSPC:
        return StorageFullError(f"{operation}: disk full")
    return StorageError(f"{operation}: {text}")


def check_file(path: Path) -> None:
    """Reject a file that is not an SQLite database, before SQLite touches it.

    A crash copy of the database without its ``-wal`` file is caught later by
    the quick check and the tip check, not here.
    """
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise StartupError(f"cannot read database {path}: {exc.strerror}") from None
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        raise StartupError(
            f"database {path} is damaged: no SQLite header (found {len(header)} bytes of "
            "something else); restore a backup with `weall restore FILE`"
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    size = path.stat().st_size
    if page_size < 512 or size % page_size:
        raise StartupError(
            f"database {path} is damaged: size {size} is not a multiple of the page size "
            f"{page_size} (truncated?); restore a backup with `weall restore FILE`"
        )
