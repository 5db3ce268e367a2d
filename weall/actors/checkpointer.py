"""The checkpointer: keeps the WAL small by asking the producer for checkpoints.

Every ``WEALL_CHECKPOINT_INTERVAL_S`` it asks for a PASSIVE checkpoint, and
for a TRUNCATE checkpoint when the ``-wal`` file is larger than
``WEALL_WAL_MAX_BYTES``. The producer runs them between blocks. A busy result
(a reader still holds an old snapshot) is retried on the next round, never
ignored: it is counted and logged once per round.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import trio

from weall import ipc
from weall.actors._base import stop_event
from weall.config import Config
from weall.errors import IpcError

__all__ = ["run", "wal_path", "wal_size"]

log = logging.getLogger(__name__)


def wal_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-wal")


def wal_size(db_path: Path) -> int:
    try:
        return wal_path(db_path).stat().st_size
    except FileNotFoundError:
        return 0


async def checkpoint_once(client: ipc.IpcClient, config: Config) -> dict[str, Any]:
    size = wal_size(config.db_path)
    mode = "TRUNCATE" if size > config.wal_max_bytes else "PASSIVE"
    answer = await client.call("checkpoint", timeout=60.0, mode=mode)
    answer["mode"] = mode
    answer["wal_bytes_before"] = size
    return answer


async def run(config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    async with ipc.open_client(config.producer_socket) as client:
        task_status.started()
        failures = 0
        busy_rounds = 0
        while not stop_event().is_set():
            with trio.move_on_after(config.checkpoint_interval_s):
                await stop_event().wait()
            if stop_event().is_set():
                break
            try:
                answer = await checkpoint_once(client, config)
            except IpcError as exc:
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    log.warning("checkpoint request failed failures=%d: %s", failures, exc)
                continue
            if failures:
                log.info("recovered errors=%d", failures)
                failures = 0
            if answer.get("busy"):
                busy_rounds += 1
                log.info("checkpoint busy mode=%s wal_bytes=%d rounds=%d; retrying next round",
                         answer["mode"], answer["wal_bytes_before"], busy_rounds)
            else:
                busy_rounds = 0
                log.debug("checkpoint done mode=%s wal_bytes_before=%d", answer["mode"],
                          answer["wal_bytes_before"])
