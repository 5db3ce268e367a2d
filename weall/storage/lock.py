"""The producer's exclusive lock on a data directory.

``flock`` on ``weall.db.lock`` beside the database. The kernel drops the lock
when the holder dies, so a crashed producer never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from weall.errors import StartupError

__all__ = ["ProducerLock", "is_locked"]


class ProducerLock:
    """Holds the lock from ``acquire()`` until ``release()`` or process exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StartupError(
                f"another producer (pid {holder}) holds {self.path}; "
                "only one producer may write a database, stop the other one first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip() or "unknown"
    except OSError:
        return "unknown"


def is_locked(path: Path) -> str | None:
    """Return the holder's pid text when some process holds the lock, else ``None``."""
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
