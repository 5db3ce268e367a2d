"""The checkpointer: keeps the WAL small and takes the scheduled live backups.

Every ``WEALL_CHECKPOINT_INTERVAL_S`` it asks for a PASSIVE checkpoint, and
for a TRUNCATE checkpoint when the ``-wal`` file is larger than
``WEALL_WAL_MAX_BYTES``. The producer runs them between blocks. A busy result
(a reader still holds an old snapshot) is retried on the next round, never
ignored: it is counted and logged once per round.

Every ``WEALL_BACKUP_INTERVAL_S`` seconds (0 turns it off) it takes a live
backup into ``WEALL_BACKUP_DIR``, prunes old ones to the retention, and then
asks for a TRUNCATE checkpoint, because the WAL could not be folded into the
database while the backup's read transaction was open.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import trio

from weall import ipc
from weall.actors._base import stop_event
from weall.config import Config
from weall.errors import IpcError, StorageError
from weall.storage.backup import prune_backups, take_backup

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


def _backup_sync(config: Config) -> dict[str, Any]:
    manifest = take_backup(config.db_path, config.backup_dir)
    prune_backups(config.backup_dir, keep_daily=config.backup_keep_daily,
                  keep_weekly=config.backup_keep_weekly)
    return {"file": manifest.file, "height": manifest.height}


async def backup_loop(client: ipc.IpcClient, config: Config) -> None:
    interval = config.backup_interval_s
    if interval <= 0:
        log.info("scheduled backups off (WEALL_BACKUP_INTERVAL_S=0)")
        return
    while True:
        await trio.sleep(interval)
        try:
            result = await trio.to_thread.run_sync(_backup_sync, config)
        except StorageError as exc:
            log.error("scheduled backup failed: %s", exc)
            continue
        log.info("scheduled backup done file=%s height=%d", result["file"], result["height"])
        try:
            await client.call("checkpoint", timeout=60.0, mode="TRUNCATE")
        except IpcError as exc:
            log.warning("checkpoint after backup failed: %s", exc)


async def run(config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    async with ipc.open_client(config.producer_socket) as client, trio.open_nursery() as nursery:
        nursery.start_soon(backup_loop, client, config)
        task_status.started()
        await checkpoint_loop(client, config)
        nursery.cancel_scope.cancel()


async def checkpoint_loop(client: ipc.IpcClient, config: Config) -> None:
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
