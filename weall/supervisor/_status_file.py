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
content, never part of one.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import orjson

__all__ = ["STATUS_FILE_NAME", "read_status_file", "write_status_file"]

STATUS_FILE_NAME: Final = "actors.json"


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
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / STATUS_FILE_NAME
    temporary = run_dir / f".{STATUS_FILE_NAME}.{os.getpid()}.tmp"
    with open(run_dir / f"{STATUS_FILE_NAME}.lock", "ab") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        merged = read_status_file(run_dir)
        for name in owned:
            merged.pop(name, None)
        merged.update(entries)
        try:
            temporary.write_bytes(orjson.dumps(merged, option=orjson.OPT_SORT_KEYS))
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
