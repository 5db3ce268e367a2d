"""Opening SQLite connections.

Connections run in autocommit mode (``isolation_level=None``) and every
caller writes its own ``BEGIN``, so a transaction's extent is always visible.
Read-only connections open the file with ``mode=ro``: SQLite then opens it
``O_RDONLY`` and rejects any write. Only ``weall.storage.writer`` calls
``open_readwrite``.

The tip file ``weall.db.tip`` beside the database stores the height and hash
of the last block the producer committed. It is written after each commit,
so it names a block the database lacks only when the database lost committed
data. That happens to a copy made without its ``-wal`` file, to a file
rolled back to an older copy, and after a power loss in
``synchronous=NORMAL``. ``check_tip`` rejects such a database at start.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote

from weall.errors import StartupError, StorageError, StorageFullError

__all__ = [
    "BUSY_TIMEOUT_MS",
    "RESTORE_HINT",
    "SPACE_PROBE_BYTES",
    "Tip",
    "applied_settings",
    "check_file",
    "check_tip",
    "has_free_space",
    "open_readonly",
    "open_readwrite",
    "read_tip",
    "tip_path",
    "translate_error",
    "wal_file_missing",
    "write_tip",
]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS: Final = 5000
SQLITE_HEADER: Final = b"SQLite format 3\x00"
RESTORE_HINT: Final = "restore a backup with `weall restore FILE`"
SPACE_PROBE_BYTES: Final = 4 * 1024 * 1024
# The producer's page cache, in KiB. SQLite's default of 2 MiB keeps only
# the top of the state table's B-tree in memory; with a large state, a
# block's reads then go to the file far more often than with a small one.
WRITER_CACHE_KIB: Final = 64 * 1024

# Values that ``PRAGMA synchronous`` reads back.
_SYNCHRONOUS_LEVELS: Final = {"NORMAL": 1, "FULL": 2}
_SYNCHRONOUS_NAMES: Final = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
# Header bytes 18 and 19 (file format write and read versions) are 2 in WAL mode.
_WAL_FORMAT: Final = 2


def open_readonly(
    path: Path, *, query_only: bool = True, immutable: bool = False
) -> sqlite3.Connection:
    """Open ``path`` with ``mode=ro``.

    ``query_only=False`` is for ``VACUUM INTO``, which writes only the target
    file but which ``PRAGMA query_only`` would reject. ``immutable=True``
    (``immutable=1``) reads the file alone and creates no ``-wal`` or
    ``-shm`` file. It is correct only when no ``-wal`` file exists and no
    process writes the database.
    """
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    if immutable:
        uri += "&immutable=1"
    try:
        conn = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if query_only:
            conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {path} read-only: {exc}") from exc
    return conn


def open_readwrite(
    path: Path, *, synchronous: str, autocheckpoint_pages: int | None = None
) -> sqlite3.Connection:
    """Open the read-write connection in WAL mode.

    ``autocheckpoint_pages`` replaces SQLite's default of 1000 pages: the
    WAL size at which a commit runs a PASSIVE checkpoint itself. The
    producer sets it above what the checkpointer's rounds let the WAL reach,
    so a block commit only appends to the WAL and the checkpoints run
    between blocks, while a node without a checkpointer still stays bounded.
    """
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
        applied = conn.execute("PRAGMA synchronous").fetchone()[0]
        if applied != _SYNCHRONOUS_LEVELS[synchronous]:
            raise StorageError(
                f"{path}: synchronous={synchronous} not applied (got level {applied})"
            )
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        if autocheckpoint_pages is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint = {int(autocheckpoint_pages)}")
    except sqlite3.Error as exc:
        raise translate_error(exc, f"open {path}") from exc
    return conn


def applied_settings(conn: sqlite3.Connection) -> dict[str, str]:
    """Read back the journal mode and the synchronous level that ``conn`` runs with.

    Returns ``{"journal_mode": "wal", "synchronous": "FULL"}`` and the like.

    Raises:
        StorageError: SQLite failed.
    """
    try:
        journal_mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        level = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    except sqlite3.Error as exc:
        raise translate_error(exc, "read the journal settings") from exc
    return {
        "journal_mode": journal_mode,
        "synchronous": _SYNCHRONOUS_NAMES.get(level, str(level)),
    }


def translate_error(exc: sqlite3.Error, operation: str) -> StorageError:
    """Map an SQLite error to ``StorageFullError`` or ``StorageError``."""
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc)
    # ``sqlite_errorcode`` is the extended code; its low byte is the primary one.
    if (
        code is not None and code & 0xFF == sqlite3.SQLITE_FULL
    ) or "database or disk is full" in text:
        return StorageFullError(f"{operation}: disk full")
    if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOSPC:
        return StorageFullError(f"{operation}: disk full")
    return StorageError(f"{operation}: {text}")


def check_file(path: Path) -> None:
    """Reject a file that is not a whole SQLite database, before SQLite touches it.

    Detects a missing or overwritten header, a size that is not a multiple of
    the page size, and, when no ``-wal`` file is beside it, a file shorter
    than the page count in its header. A crash copy of the database without
    its ``-wal`` file is caught by ``check_tip``, not here.
    """
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise StartupError(f"cannot read database {path}: {exc.strerror}") from None
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        raise StartupError(
            f"database {path} is damaged: no SQLite header (found {len(header)} bytes of "
            f"something else); {RESTORE_HINT}"
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    size = path.stat().st_size
    if page_size < 512 or size % page_size:
        raise StartupError(
            f"database {path} is damaged: size {size} is not a multiple of the page size "
            f"{page_size} (truncated?); {RESTORE_HINT}"
        )
    _check_page_count(path, header, size // page_size)


def _check_page_count(path: Path, header: bytes, pages: int) -> None:
    # The count at offset 28 is valid when the change counter (offset 24)
    # equals the version-valid-for number (offset 92). A checkpoint cut short
    # by a crash may leave the file shorter than its header records, but the
    # -wal file still contains those pages then, so the check needs it absent.
    counted = int.from_bytes(header[28:32], "big")
    if not counted or header[24:28] != header[92:96] or pages >= counted:
        return
    if _sibling(path, "-wal").exists():
        return
    raise StartupError(
        f"database {path} is damaged: the file contains {pages} pages but its header "
        f"records {counted} and there is no -wal file (truncated?); {RESTORE_HINT}"
    )


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def wal_file_missing(path: Path) -> bool:
    """Return True when ``path`` is in WAL mode but has no ``-wal`` file beside it.

    NOTE: a clean close also deletes the ``-wal`` file, so this alone does not
    show that data is missing. ``check_tip`` uses it only to explain a loss.
    """
    try:
        with path.open("rb") as handle:
            header = handle.read(20)
    except OSError:
        return False
    in_wal_mode = len(header) == 20 and header[18] == header[19] == _WAL_FORMAT
    return in_wal_mode and not _sibling(path, "-wal").exists()


def has_free_space(db_path: Path, nbytes: int = SPACE_PROBE_BYTES) -> bool:
    """Write and delete ``nbytes`` in ``weall.db.space-probe``; return True when it fit.

    A real write is the test because ``statvfs`` counts neither quotas nor the
    blocks a filesystem reserves for root. Any ``OSError`` counts as no space.
    """
    probe = _sibling(db_path, ".space-probe")
    chunk = bytes(min(nbytes, 1024 * 1024))
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            written = 0
            while written < nbytes:
                written += os.write(fd, chunk[: nbytes - written])
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        log.debug("space probe failed path=%s bytes=%d: %s", probe, nbytes, exc)
        return False
    finally:
        probe.unlink(missing_ok=True)
    return True


# -- the tip file ---------------------------------------------------------------


@dataclass(frozen=True)
class Tip:
    """The last committed block as the tip file records it."""

    height: int
    hash: str


def tip_path(db_path: Path) -> Path:
    return _sibling(db_path, ".tip")


def write_tip(
    db_path: Path, height: int, block_hash: str, *, sync: bool = False
) -> None:
    """Replace the tip file atomically (temporary file, then rename).

    Raises:
        OSError: the file could not be written (the disk may be full).
    """
    path = tip_path(db_path)
    temp = _sibling(path, ".tmp")
    data = json.dumps({"height": height, "hash": block_hash}).encode() + b"\n"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)


def read_tip(db_path: Path) -> Tip | None:
    """Return the recorded tip, or ``None`` when there is no readable tip file.

    An unreadable or malformed file (for example one left empty by a power
    loss before its data reached the disk) is logged and ignored, because the
    tip file can only add a check, never be the reason a start fails.
    """
    path = tip_path(db_path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        tip = Tip(height=int(document["height"]), hash=str(document["hash"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable tip file path=%s: %s", path, exc)
        return None
    return tip


def check_tip(db_path: Path, conn: sqlite3.Connection) -> None:
    """Reject a database that lacks the last block the tip file records.

    Raises:
        StartupError: the block at the recorded height is missing or differs.
    """
    tip = read_tip(db_path)
    if tip is None:
        return
    row = conn.execute(
        "SELECT hash FROM blocks WHERE height = ?", (tip.height,)
    ).fetchone()
    if row is not None and row[0] == tip.hash:
        return
    record = tip_path(db_path)
    if row is not None:
        raise StartupError(
            f"database {db_path} contains block {tip.height} with hash {row[0]} but {record} "
            f"records {tip.hash}: this is another copy of the chain; {RESTORE_HINT}"
        )
    head = conn.execute("SELECT MAX(height) FROM blocks").fetchone()[0]
    cause = (
        "it is in WAL mode with no -wal file beside it (a copy made without its -wal?)"
        if wal_file_missing(db_path)
        else "it was rolled back or lost its last writes"
    )
    raise StartupError(
        f"database {db_path} is missing committed blocks: it ends at height {head} but "
        f"block {tip.height} was committed ({record}); {cause}; {RESTORE_HINT}, or, after a "
        f"power loss with synchronous=NORMAL (WEALL_MODE=dev), delete {record} to accept it"
    )
