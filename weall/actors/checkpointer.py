"""The checkpointer: keeps the WAL small and takes the scheduled live backups.

Each round, every ``WEALL_CHECKPOINT_INTERVAL_S``, it asks the producer for
a PASSIVE checkpoint, or for a TRUNCATE one when the ``-wal`` file is larger
than ``WEALL_WAL_MAX_BYTES``. A PASSIVE checkpoint that leaves frames behind
(a reader still holds an older snapshot) is followed by a TRUNCATE one, so
the file shrinks as soon as that reader is done. The producer runs every
checkpoint between blocks and lets it wait for readers for at most
``CHECKPOINT_BUSY_TIMEOUT_MS`` (20 ms).

A busy TRUNCATE is never skipped: it is retried within the round with a
capped exponential backoff (``RETRY_FIRST_S`` doubling up to
``RETRY_MAX_S``), and a round that ends busy starts the next one at once
instead of sleeping, so the WAL is truncated within ``RETRY_MAX_S`` of the
last old reader finishing. A round that needed retries logs one line.

It takes a live backup into ``WEALL_BACKUP_DIR`` whenever the newest backup
there is older than ``WEALL_BACKUP_INTERVAL_S`` (0 turns scheduled backups
off), at start too, and prunes old ones to the retention. The schedule is
timed from the newest manifest's ``created_ms``, not from the actor's start,
so a node restarted more often than the interval still gets its backups,
and a ``weall backup`` moves the next scheduled one. The directory is read
again at least every ``BACKUP_RECHECK_S``. A failed backup is tried again
after ``BACKUP_RETRY_S`` (or the interval, when shorter). A manifest dated
in the future (the clock went back) does not count, so the schedule goes on.

The WAL could not be folded into the database while a backup's read
transaction was open. So between rounds the checkpointer looks for a new
manifest in ``WEALL_BACKUP_DIR`` every ``BACKUP_POLL_S`` (from this actor or from
``weall backup``), and when one appears it runs a TRUNCATE round at once,
whatever the WAL's size.

NOTE: a backup written elsewhere (``weall backup --dir``) is not noticed; the
WAL is then truncated only once it passes its limit or PASSIVE leaves frames.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from weall import ipc
from weall.actors._base import stop_event
from weall.config import Config
from weall.errors import IpcError, StorageError
from weall.storage.backup import (
    BackupInProgressError,
    BackupManifest,
    newest_manifest,
    prune_backups,
    take_backup,
)

__all__ = [
    "CheckpointRound",
    "TruncateAttempts",
    "checkpoint_round",
    "next_backup_due",
    "run",
    "truncate_with_retries",
    "wal_path",
    "wal_size",
]

log = logging.getLogger(__name__)

RETRY_FIRST_S: Final = 0.05
RETRY_MAX_S: Final = 0.25
CALL_TIMEOUT_S: Final = 60.0
# Busy rounds in a row between two warnings about the same reader.
BUSY_LOG_EVERY: Final = 10
BACKUP_POLL_S: Final = 0.25
BACKUP_RECHECK_S: Final = 60.0
BACKUP_RETRY_S: Final = 300.0
BACKUP_BUSY_RETRY_S: Final = 5.0


@dataclass(frozen=True)
class CheckpointRound:
    """The outcome of one round: the last mode run and whether it stayed busy."""

    mode: str
    busy: bool
    # Checkpoint requests in the round, and how many of them were busy retries.
    attempts: int
    retries: int
    wal_bytes_before: int
    wal_bytes_after: int
    waited_s: float


def wal_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-wal")


def wal_size(db_path: Path) -> int:
    try:
        return wal_path(db_path).stat().st_size
    except FileNotFoundError:
        return 0


async def _checkpoint(client: ipc.IpcClient, mode: str) -> dict[str, Any]:
    """Run one checkpoint in the producer.

    Raises:
        IpcError: the producer could not be reached.
        StorageError: the producer answered with an error (a full disk, say).
    """
    answer = await client.call("checkpoint", timeout=CALL_TIMEOUT_S, mode=mode)
    if not answer.get("ok"):
        error = answer.get("error", {})
        raise StorageError(
            f"checkpoint {mode}: {error.get('code')}: {error.get('message')}"
        )
    return answer


def _left_frames(answer: dict[str, Any]) -> bool:
    return bool(answer["busy"]) or int(answer["checkpointed"]) < int(
        answer["wal_pages"]
    )


@dataclass(frozen=True)
class TruncateAttempts:
    """The TRUNCATE checkpoints of one round: the last reply and the pauses before retries."""

    answer: dict[str, Any]
    attempts: int
    # Seconds slept before each retry, in order.
    delays_s: tuple[float, ...]


async def truncate_with_retries(
    client: ipc.IpcClient, budget_s: float
) -> TruncateAttempts:
    """Run a TRUNCATE checkpoint, retrying a busy one until ``budget_s`` has passed.

    The pause before each retry starts at ``RETRY_FIRST_S`` and doubles up
    to ``RETRY_MAX_S``.
    """
    deadline = trio.current_time() + budget_s
    delay = RETRY_FIRST_S
    delays: list[float] = []
    while True:
        answer = await _checkpoint(client, "TRUNCATE")
        if not answer["busy"] or trio.current_time() + delay > deadline:
            return TruncateAttempts(answer, len(delays) + 1, tuple(delays))
        log.debug(
            "checkpoint busy mode=TRUNCATE attempt=%d retry_in=%.2f",
            len(delays) + 1,
            delay,
        )
        await trio.sleep(delay)
        delays.append(delay)
        delay = min(delay * 2, RETRY_MAX_S)


def backup_mark(backup_dir: Path) -> int:
    """The newest modification time (ns) of a backup manifest, 0 when there is none."""
    try:
        return max(
            (p.stat().st_mtime_ns for p in backup_dir.glob("weall-*.json")), default=0
        )
    except OSError:
        return 0


async def checkpoint_round(
    client: ipc.IpcClient, config: Config, *, truncate: bool = False
) -> CheckpointRound:
    """Run one checkpoint round.

    The round is a TRUNCATE checkpoint when ``truncate`` is set, when the WAL
    is over its limit, or when a PASSIVE checkpoint left frames behind, and a
    PASSIVE one otherwise.
    """
    started = trio.current_time()
    before = wal_size(config.db_path)
    attempts = 0
    if not truncate and before <= config.wal_max_bytes:
        answer = await _checkpoint(client, "PASSIVE")
        attempts = 1
        if not _left_frames(answer):
            return CheckpointRound(
                "PASSIVE",
                False,
                1,
                0,
                before,
                wal_size(config.db_path),
                trio.current_time() - started,
            )
    truncated = await truncate_with_retries(client, config.checkpoint_interval_s)
    return CheckpointRound(
        "TRUNCATE",
        bool(truncated.answer["busy"]),
        attempts + truncated.attempts,
        truncated.attempts - 1,
        before,
        wal_size(config.db_path),
        trio.current_time() - started,
    )


def next_backup_due(
    backup_dir: Path, interval_s: float, now_ms: int
) -> tuple[float, BackupManifest | None]:
    """Return the seconds until the next scheduled backup (0 when due) and the newest backup.

    Backups dated after ``now_ms`` are left out: they mean the clock went
    back, and counting them would hold the schedule until it catches up.
    """
    newest = newest_manifest(backup_dir, before_ms=now_ms)
    if newest is None:
        return 0.0, None
    age_s = (now_ms - newest.created_ms) / 1000
    return max(0.0, interval_s - age_s), newest


def _backup_sync(config: Config) -> BackupManifest:
    manifest = take_backup(config.db_path, config.backup_dir)
    prune_backups(
        config.backup_dir,
        keep_daily=config.backup_keep_daily,
        keep_weekly=config.backup_keep_weekly,
    )
    return manifest


def _due_now(config: Config) -> tuple[float, BackupManifest | None]:
    return next_backup_due(
        config.backup_dir, config.backup_interval_s, int(time.time() * 1000)
    )


async def backup_loop(config: Config) -> None:
    interval = config.backup_interval_s
    if interval <= 0:
        log.info("scheduled backups off (WEALL_BACKUP_INTERVAL_S=0)")
        return
    # The newest backup whose schedule was logged; "" when none was logged yet.
    announced: str | None = ""
    failures = 0
    while True:
        wait_s, newest = await trio.to_thread.run_sync(_due_now, config)
        if wait_s > 0:
            newest_file = None if newest is None else newest.file
            if newest_file != announced:
                log.info(
                    "next scheduled backup in %.0f s newest=%s interval_s=%d",
                    wait_s,
                    newest_file,
                    interval,
                )
                announced = newest_file
            await trio.sleep(min(wait_s, BACKUP_RECHECK_S))
            continue
        try:
            manifest = await trio.to_thread.run_sync(_backup_sync, config)
        except BackupInProgressError as exc:
            # The other backup's manifest moves the schedule once it is done.
            log.info("scheduled backup waits: %s", exc)
            await trio.sleep(min(interval, BACKUP_BUSY_RETRY_S))
            continue
        except (StorageError, OSError) as exc:
            failures += 1
            delay = min(interval, BACKUP_RETRY_S)
            log.error(
                "scheduled backup failed failures=%d retry_in=%.0f: %s",
                failures,
                delay,
                exc,
            )
            announced = ""
            await trio.sleep(delay)
            continue
        if failures:
            log.info("scheduled backup recovered failures=%d", failures)
            failures = 0
        log.info(
            "scheduled backup done file=%s height=%d duration_s=%.2f",
            manifest.file,
            manifest.height,
            manifest.duration_s,
        )


async def run(
    config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async with (
        ipc.open_client(config.producer_socket) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(backup_loop, config)
        task_status.started()
        await checkpoint_loop(client, config)
        nursery.cancel_scope.cancel()


class _RoundLog:
    """Rate-limited logging of failed and busy rounds."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.failures = 0
        self.busy_rounds = 0

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.failures == 1 or self.failures % 60 == 0:
            log.warning("checkpoint request failed failures=%d: %s", self.failures, exc)

    def finished(self, result: CheckpointRound) -> None:
        if self.failures:
            log.info("recovered errors=%d", self.failures)
            self.failures = 0
        if result.busy:
            self.busy_rounds += 1
            if self.busy_rounds == 1 or self.busy_rounds % BUSY_LOG_EVERY == 0:
                log.warning(
                    "checkpoint busy mode=%s attempts=%d wal_bytes=%d wal_max_bytes=%d "
                    "busy_rounds=%d retry_in=%.2f: a reader holds an old snapshot",
                    result.mode,
                    result.attempts,
                    result.wal_bytes_after,
                    self.config.wal_max_bytes,
                    self.busy_rounds,
                    RETRY_FIRST_S,
                )
            return
        if self.busy_rounds:
            log.info(
                "checkpoint recovered mode=%s busy_rounds=%d wal_bytes_before=%d "
                "wal_bytes_after=%d",
                result.mode,
                self.busy_rounds,
                result.wal_bytes_before,
                result.wal_bytes_after,
            )
            self.busy_rounds = 0
        elif result.retries:
            log.info(
                "checkpoint done after busy retries mode=%s retries=%d waited_s=%.2f "
                "wal_bytes_before=%d wal_bytes_after=%d",
                result.mode,
                result.retries,
                result.waited_s,
                result.wal_bytes_before,
                result.wal_bytes_after,
            )
        else:
            log.debug(
                "checkpoint done mode=%s attempts=%d wal_bytes_before=%d wal_bytes_after=%d",
                result.mode,
                result.attempts,
                result.wal_bytes_before,
                result.wal_bytes_after,
            )


async def _wait_next_round(config: Config, seen_backup: int, delay_s: float) -> int:
    """Sleep ``delay_s``, less when a new backup manifest appears or the actor stops.

    Returns the newest manifest's mark.
    """
    deadline = trio.current_time() + delay_s
    while True:
        with trio.move_on_at(min(deadline, trio.current_time() + BACKUP_POLL_S)):
            await stop_event().wait()
        mark = await trio.to_thread.run_sync(backup_mark, config.backup_dir)
        if (
            stop_event().is_set()
            or mark != seen_backup
            or trio.current_time() >= deadline
        ):
            return mark


async def checkpoint_loop(client: ipc.IpcClient, config: Config) -> None:
    rounds = _RoundLog(config)
    busy = False
    seen_backup = await trio.to_thread.run_sync(backup_mark, config.backup_dir)
    while not stop_event().is_set():
        # A round that ended busy is followed by another at once: its own
        # backoff spaces the attempts.
        delay_s = 0.0 if busy else config.checkpoint_interval_s
        newest_backup = await _wait_next_round(config, seen_backup, delay_s)
        if stop_event().is_set():
            break
        after_backup = newest_backup != seen_backup
        try:
            result = await checkpoint_round(client, config, truncate=after_backup)
        except (IpcError, StorageError) as exc:
            rounds.failed(exc)
            busy = False
            continue
        if after_backup:
            seen_backup = newest_backup
            log.info(
                "checkpoint after backup mode=%s busy=%s wal_bytes_before=%d wal_bytes_after=%d",
                result.mode,
                result.busy,
                result.wal_bytes_before,
                result.wal_bytes_after,
            )
        rounds.finished(result)
        busy = result.busy
