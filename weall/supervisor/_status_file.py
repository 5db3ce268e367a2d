"""The ``actors.json`` status file in the run directory.

The api reads it for ``/health``. Its shape, one key per actor::

    {"producer": {"state": "running", "pid": 4242, "restarts": 0,
                  "started_at_ms": 1796353844123, "last_exit": null,
                  "supervisor_pid": 4240}}

``last_exit`` is null or ``{"code": int | null, "signal": str | null,
"reason": str | null, "at_ms": int}``. Two supervisors may share one run
directory (one with the api, one with the other actors), so each rewrites only
the keys of its own actors, under an exclusive lock on ``actors.json.lock``.
The file is replaced by a rename, so a reader sees either the old or the new
content, never part of one. A writer waits at most ``LOCK_TIMEOUT_S`` for the
lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import orjson

__all__ = ["STATUS_FILE_NAME", "read_status_file", "write_status_file"]

STATUS_FILE_NAME: Final = "actors.json"
LOCK_TIMEOUT_S: Final = 2.0
_LOCK_POLL_S: Final = 0.02


def read_status_file(run_dir: Path) -> dict[str, Any]:
    """Return the entries of ``actors.json``; empty when it is missing or invalid."""
    try:
        content = orjson.loads((run_dir / STATUS_FILE_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return content if isinstance(content, dict) else {}


def write_status_file(
    run_dir: Path, entries: Mapping[str, Mapping[str, Any]], owned: Iterable[str]
) -> None:
    """Replace the entries of the actors in ``owned`` by ``entries``.

    Raises:
        OSError: the run directory or the file cannot be written.
        TimeoutError: another process held the lock for ``LOCK_TIMEOUT_S``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / STATUS_FILE_NAME
    temporary = run_dir / f".{STATUS_FILE_NAME}.{os.getpid()}.tmp"
    lock_path = run_dir / f"{STATUS_FILE_NAME}.lock"
    with open(lock_path, "ab") as lock:
        _lock_exclusive(lock.fileno(), lock_path)
        merged = read_status_file(run_dir)
        for name in owned:
            merged.pop(name, None)
        merged.update(entries)
        try:
            temporary.write_bytes(orjson.dumps(merged, option=orjson.OPT_SORT_KEYS))
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


def _lock_exclusive(fd: int, path: Path) -> None:
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"timed out after {LOCK_TIMEOUT_S:g} s waiting for the lock {path}"
                ) from None
            time.sleep(_LOCK_POLL_S)
