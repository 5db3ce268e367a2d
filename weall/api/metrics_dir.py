"""The api processes' shared metric files (prometheus_client's multiprocess mode).

Under ``weall supervise`` every api process (``WEALL_API_WORKERS`` of them)
gets ``PROMETHEUS_MULTIPROC_DIR`` set to a directory of the supervisor's own,
named after its control socket, in memory-backed storage (``/dev/shm``, or
the system's temporary directory where there is none). Two supervisors that
share a run directory (``WEALL_CONTROL_SOCKET``) get one each.

The files are memory-mapped and sparse. When their filesystem is full, a
write into a page that has no disk block yet kills the process with SIGBUS. Kept beside the database, they took the api down with every restart
while the data disk was full, instead of leaving it answering reads. Each process
then keeps its request counters and latency histograms in its own files
there, and ``GET /metrics``, whichever process serves it, sums the files of
all of them. So successive scrapes never go down, whichever worker answers.

The supervisor empties the directory when it starts, under its control lock,
and calls ``mark_api_process_dead`` for each api process that exits. That
removes the exited process's live-gauge files, as prometheus_client's
documentation asks. The counter and histogram files of an exited process
stay, so the sums never go down when an api process restarts either.

NOTE: each api process start adds a few files (sparse, 1 MiB apparent size
each), and a scrape reads all of them, so a node whose api restarts very
often scrapes more slowly until the supervisor restarts.

This module imports nothing of the api, because the supervisor uses it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Final

from prometheus_client import multiprocess

__all__ = [
    "METRICS_DIR_ENV",
    "mark_api_process_dead",
    "metrics_dir",
    "remove_metrics_dir",
    "reset_metrics_dir",
]

log = logging.getLogger(__name__)

# prometheus_client reads this variable when it is first imported, so it
# must be in the api process's environment from its start.
METRICS_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir(control_socket: Path) -> Path:
    """Return the shared metric files' directory of the supervisor at ``control_socket``.

    The name carries a hash of the socket's absolute path, so every
    supervisor on the machine has its own.
    """
    digest = hashlib.sha256(str(control_socket.absolute()).encode()).hexdigest()[:16]
    return _memory_root() / f"weall-metrics-{control_socket.stem}-{digest}"


def _memory_root() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(tempfile.gettempdir())


def remove_metrics_dir(path: Path) -> None:
    """Remove ``path`` and its files when the supervisor stops; a failure is logged."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("metrics directory not removed path=%s: %s", path, exc)


def reset_metrics_dir(path: Path) -> None:
    """Remove every file of an earlier run from ``path`` and create it empty.

    Raises:
        OSError: the directory cannot be removed or created.
    """
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)
    log.info("metrics directory reset path=%s", path)


def mark_api_process_dead(path: Path, pid: int) -> None:
    """Remove the live-gauge files of the exited api process ``pid``.

    A failure is logged, not raised, because the supervisor calls this when
    the process exits and must go on supervising.
    """
    try:
        multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    except OSError as exc:
        log.warning("metric files of pid=%d not cleaned path=%s: %s", pid, path, exc)
