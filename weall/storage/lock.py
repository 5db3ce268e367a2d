"""Exclusive locks on files: the producer's lock on a data directory, and others.

``flock`` on a lock file that records the holder's pid. The kernel drops the
lock when the holder dies, so a crashed holder never leaves a stale lock.
The producer's lock is ``weall.db.lock`` beside the database.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from weall.errors import StartupError

__all__ = ["FileLock", "ProducerLock", "is_locked"]


class FileLock:
    """An exclusive ``flock`` on ``path``, held from ``try_acquire()`` until ``release()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> str | None:
        """Take the lock without waiting; return ``None``, or the holder's pid text.

        The lock file is created (mode 0600) when missing and never deleted,
        because a process that opened a deleted lock file would lock a
        different file than the next process.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            return holder
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class ProducerLock(FileLock):
    """The lock that one producer holds on its data directory."""

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            StartupError: another process holds it.
        """
        holder = self.try_acquire()
        if holder is not None:
            raise StartupError(
                f"another producer (pid {holder}) holds {self.path}; "
                "only one producer may write a database, stop the other one first"
            )


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
