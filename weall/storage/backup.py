"""Live backups, their verification, retention and restore.

A backup is ``VACUUM INTO`` from a read-only connection: one read
transaction, so the copy is a consistent snapshot of committed blocks (every
commit of the producer ends at a block or admission boundary), and the
producer keeps writing meanwhile because WAL readers never block the writer.
No incremental backup is used, since one that pauses between steps restarts
after every commit and never finishes under load.

Steps: take the backup directory's lock (``backup.lock``), delete the
temporary files that earlier backups left when they were killed, write
``NAME.db.tmp``, fsync it, verify it (integrity check, schema version,
genesis hash, tip hash), rename it to ``NAME.db``, fsync the directory, then
write ``NAME.json`` (height, tip hash, time, size, modification time,
SHA-256 and the verification's results) the same way. The lock makes a
second backup into the same directory fail at once with
``BackupInProgressError``, so no backup deletes another's temporary file.
``verify_backup`` also checks a file against the manifest beside it, which
finds changed bytes that the integrity check cannot see.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from weall.errors import StartupError, StorageError
from weall.storage import queries
from weall.storage.db import check_file, open_readonly, write_tip
from weall.storage.lock import FileLock, ProducerLock, is_locked
from weall.storage.schema import SCHEMA_VERSION, current_version

__all__ = [
    "LOCK_NAME",
    "BackupInProgressError",
    "BackupManifest",
    "list_manifests",
    "newest_manifest",
    "prune_backups",
    "remove_stale_temps",
    "restore_backup",
    "sha256_file",
    "take_backup",
    "verify_backup",
]

log = logging.getLogger(__name__)

# The lock file in the backup directory, held while a backup is taken.
LOCK_NAME: Final = "backup.lock"
# Temporary files of a backup: the copy, then its manifest.
TEMP_PATTERNS: Final = ("weall-*.db.tmp", "weall-*.json.tmp")
LOCK_POLL_S: Final = 0.2

# Called with the step a backup is at ("copying", "verifying", "hashing")
# and the file that step reads or writes.
StepHook = Callable[[str, Path], None]


class BackupInProgressError(StorageError):
    """Another process is taking a backup into the same directory."""


@dataclass(frozen=True)
class BackupManifest:
    """The description of one backup, stored as ``NAME.json`` beside ``NAME.db``.

    ``mtime_ns`` is the backup file's modification time once it was renamed
    into place, and ``verification`` the checks it passed before that
    (``verified_at_ms``, ``duration_s``, ``integrity_check``,
    ``schema_version``, ``genesis_hash``, ``tip_hash``, ``height``).
    Manifests written before these fields existed read as ``None``.
    """

    file: str
    height: int
    tip_hash: str
    genesis_hash: str
    chain_id: str
    schema_version: int
    created_ms: int
    size_bytes: int
    sha256: str
    duration_s: float
    mtime_ns: int | None = None
    verification: dict[str, Any] | None = None


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def verify_backup(path: Path, *, expected_genesis: str | None = None) -> dict[str, Any]:
    """Check a backup file; return its height, tip, genesis and schema version.

    When ``NAME.json`` is beside ``NAME.db``, the file's size, SHA-256 and
    tip must match that manifest too. ``manifest`` in the result is
    ``"matched"`` or ``"absent"``.

    Raises:
        StorageError: naming what failed.
    """
    manifest = _manifest_beside(path)
    if manifest is not None:
        _check_against_manifest(path, manifest)
    facts = _verify_database(path, expected_genesis)
    if manifest is not None and (manifest.height, manifest.tip_hash) != (
        facts["height"],
        facts["tip_hash"],
    ):
        raise StorageError(
            f"backup {path} ends at height {facts['height']} ({facts['tip_hash']}) but its "
            f"manifest records height {manifest.height} ({manifest.tip_hash})"
        )
    facts["manifest"] = "absent" if manifest is None else "matched"
    return facts


def _manifest_beside(path: Path) -> BackupManifest | None:
    manifest_path = path.with_suffix(".json")
    if path.suffix != ".db" or not manifest_path.exists():
        return None
    try:
        return BackupManifest(**json.loads(manifest_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise StorageError(f"manifest {manifest_path} is unreadable: {exc}") from None


def _check_against_manifest(path: Path, manifest: BackupManifest) -> None:
    size = path.stat().st_size
    if size != manifest.size_bytes:
        raise StorageError(
            f"backup {path} is {size} bytes but its manifest records {manifest.size_bytes}"
        )
    digest = sha256_file(path)
    if digest != manifest.sha256:
        raise StorageError(
            f"backup {path} has SHA-256 {digest} but its manifest records {manifest.sha256}: "
            "the file changed after the backup was taken"
        )


def _verify_database(path: Path, expected_genesis: str | None) -> dict[str, Any]:
    try:
        check_file(path)
    except StartupError as exc:
        raise StorageError(str(exc)) from None
    uri = f"file:{path.absolute()}?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"backup {path} cannot be opened: {exc}") from exc
    try:
        result = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        if result != "ok":
            raise StorageError(f"backup {path} failed the integrity check: {result}")
        version = current_version(conn)
        if not 1 <= version <= SCHEMA_VERSION:
            raise StorageError(
                f"backup {path} has schema version {version}; expected 1..{SCHEMA_VERSION}"
            )
        stored = queries.meta(conn)
        head = queries.head_header(conn)
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"backup {path} is damaged: {exc}") from exc
    finally:
        conn.close()
    if head is None:
        raise StorageError(f"backup {path} holds no blocks")
    genesis = stored.get("genesis_hash")
    if expected_genesis is not None and genesis != expected_genesis:
        raise StorageError(
            f"backup {path} is of genesis {genesis}, expected {expected_genesis}"
        )
    if head["header"]["height"] != head["height"]:
        raise StorageError(f"backup {path}: tip header does not match its row")
    return {
        "height": head["height"],
        "tip_hash": head["hash"],
        "genesis_hash": genesis,
        "chain_id": stored.get("chain_id"),
        "schema_version": version,
        "integrity_check": result,
    }


def remove_stale_temps(backup_dir: Path) -> list[Path]:
    """Delete the temporary files of backups that were killed; return their paths.

    Call it only while holding the directory's lock, because then no backup
    is running that could own one of them.
    """
    removed = []
    for pattern in TEMP_PATTERNS:
        for path in sorted(backup_dir.glob(pattern)):
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            log.warning(
                "removed temporary file of an unfinished backup path=%s size_bytes=%d",
                path,
                size,
            )
            removed.append(path)
    return removed


def _lock_backup_dir(
    backup_dir: Path, wait_s: float | None, on_step: StepHook
) -> FileLock:
    """Take the directory's lock, polling for up to ``wait_s`` (``None``: no limit)."""
    lock = FileLock(backup_dir / LOCK_NAME)
    deadline = None if wait_s is None else time.monotonic() + wait_s
    waiting = False
    while (holder := lock.try_acquire()) is not None:
        if deadline is not None and time.monotonic() >= deadline:
            raise BackupInProgressError(
                f"another backup (pid {holder}) is being taken into {backup_dir}; "
                "wait for it to finish"
            )
        if not waiting:
            log.info(
                "backup waits for another backup pid=%s dir=%s", holder, backup_dir
            )
            on_step("waiting", lock.path)
            waiting = True
        time.sleep(LOCK_POLL_S)
    return lock


def take_backup(
    db_path: Path,
    backup_dir: Path,
    *,
    now: dt.datetime | None = None,
    on_step: StepHook | None = None,
    wait_s: float | None = 0.0,
) -> BackupManifest:
    """Take a verified live backup of ``db_path`` into ``backup_dir``.

    While another backup into ``backup_dir`` runs, it waits up to ``wait_s``
    seconds for it to finish (``None``: no limit). ``on_step`` is called
    from this thread as each step starts, "waiting" included.

    Raises:
        BackupInProgressError: another backup was still running after ``wait_s``.
        StorageError: the copy or its verification failed.
    """
    step = on_step or _no_step
    backup_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_backup_dir(backup_dir, wait_s, step)
    try:
        remove_stale_temps(backup_dir)
        # Named after the moment it starts copying, so after any wait.
        moment = now or dt.datetime.now(dt.UTC)
        manifest = _take_locked(db_path, backup_dir, moment, step)
    finally:
        lock.release()
    log.info(
        "backup taken file=%s height=%d size_bytes=%d duration_s=%.2f",
        manifest.file,
        manifest.height,
        manifest.size_bytes,
        manifest.duration_s,
    )
    return manifest


def _no_step(step: str, path: Path) -> None:
    pass


def _take_locked(
    db_path: Path, backup_dir: Path, moment: dt.datetime, on_step: StepHook
) -> BackupManifest:
    started = time.monotonic()
    name = f"weall-{moment.strftime('%Y%m%dT%H%M%S%fZ')}"
    final = backup_dir / f"{name}.db"
    temp = backup_dir / f"{name}.db.tmp"
    on_step("copying", temp)
    conn = open_readonly(db_path, query_only=False)
    try:
        genesis = queries.meta(conn).get("genesis_hash")
        conn.execute("VACUUM INTO ?", (str(temp),))
    except sqlite3.Error as exc:
        temp.unlink(missing_ok=True)
        raise StorageError(f"backup of {db_path} failed: {exc}") from exc
    finally:
        conn.close()
    try:
        _fsync_path(temp)
        on_step("verifying", temp)
        checked = time.monotonic()
        facts = verify_backup(temp, expected_genesis=genesis)
        verification = {
            "verified_at_ms": int(time.time() * 1000),
            "duration_s": round(time.monotonic() - checked, 3),
            "integrity_check": facts["integrity_check"],
            "schema_version": facts["schema_version"],
            "genesis_hash": facts["genesis_hash"],
            "tip_hash": facts["tip_hash"],
            "height": facts["height"],
        }
        os.replace(temp, final)
        _fsync_path(backup_dir)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    on_step("hashing", final)
    info = final.stat()
    manifest = BackupManifest(
        file=final.name,
        height=facts["height"],
        tip_hash=facts["tip_hash"],
        genesis_hash=facts["genesis_hash"],
        chain_id=facts["chain_id"],
        schema_version=facts["schema_version"],
        created_ms=int(moment.timestamp() * 1000),
        size_bytes=info.st_size,
        sha256=sha256_file(final),
        duration_s=round(time.monotonic() - started, 3),
        mtime_ns=info.st_mtime_ns,
        verification=verification,
    )
    _write_manifest(backup_dir / f"{name}.json", manifest)
    return manifest


def _write_manifest(path: Path, manifest: BackupManifest) -> None:
    temp = path.with_suffix(".json.tmp")
    with temp.open("w", encoding="utf-8") as handle:
        json.dump(asdict(manifest), handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    _fsync_path(path.parent)


def list_manifests(backup_dir: Path) -> list[BackupManifest]:
    """Read every readable ``weall-*.json`` manifest in ``backup_dir``, in name order."""
    manifests = []
    for path in sorted(backup_dir.glob("weall-*.json")):
        try:
            manifests.append(
                BackupManifest(**json.loads(path.read_text(encoding="utf-8")))
            )
        except (OSError, ValueError, TypeError) as exc:
            log.warning("skipping unreadable manifest path=%s: %s", path, exc)
    return manifests


def newest_manifest(
    backup_dir: Path, *, before_ms: int | None = None
) -> BackupManifest | None:
    """Return the manifest of the newest backup whose file is still there, or ``None``.

    With ``before_ms``, backups created after that time are left out.
    """
    present = [
        m
        for m in list_manifests(backup_dir)
        if (before_ms is None or m.created_ms <= before_ms)
        and (backup_dir / m.file).exists()
    ]
    return max(present, key=lambda m: m.created_ms, default=None)


def prune_backups(backup_dir: Path, *, keep_daily: int, keep_weekly: int) -> list[str]:
    """Delete backups outside the retention; return the files deleted.

    Kept: the newest backup of each of the ``keep_daily`` most recent days
    that have one, and the newest of each of the ``keep_weekly`` most recent
    ISO weeks that have one. Days and weeks are in UTC. The newest backup is
    always kept, even with both counts at 0.
    """
    manifests = sorted(
        list_manifests(backup_dir), key=lambda m: m.created_ms, reverse=True
    )
    keep: set[str] = {manifests[0].file} if manifests else set()
    days: list[dt.date] = []
    weeks: list[tuple[int, int]] = []
    for manifest in manifests:
        moment = dt.datetime.fromtimestamp(manifest.created_ms / 1000, dt.UTC)
        day = moment.date()
        week = tuple(moment.isocalendar())[:2]
        if day not in days and len(days) < keep_daily:
            days.append(day)
            keep.add(manifest.file)
        if week not in weeks and len(weeks) < keep_weekly:
            weeks.append(week)  # type: ignore[arg-type]
            keep.add(manifest.file)
    deleted = []
    for manifest in manifests:
        if manifest.file in keep:
            continue
        (backup_dir / manifest.file).unlink(missing_ok=True)
        (backup_dir / manifest.file).with_suffix(".json").unlink(missing_ok=True)
        deleted.append(manifest.file)
        log.info("backup pruned file=%s height=%d", manifest.file, manifest.height)
    return deleted


def restore_backup(
    backup: Path,
    db_path: Path,
    lock_path: Path,
    *,
    accept: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Replace ``db_path`` by a verified copy of ``backup``; the node must be stopped.

    The producer lock is taken first, so a running node is refused at once,
    before the slow verification of a large backup. The restore holds the
    lock throughout, so no producer can start on a half-restored directory.
    ``accept`` is called with ``verify_backup``'s result before anything is
    replaced, and may raise to stop the restore. The database it replaces is
    kept beside it as ``weall.db.before-restore-<time>``, with its ``-wal``
    file renamed the same way so that the copy keeps every block it held.
    The tip file is rewritten to the backup's tip.

    Raises:
        StartupError: a producer holds the lock.
        StorageError: the backup failed verification.
    """
    lock = ProducerLock(lock_path)
    try:
        lock.acquire()
    except StartupError:
        holder = is_locked(lock_path) or "unknown"
        raise StartupError(
            f"a producer (pid {holder}) holds {lock_path}; stop the node before restoring"
        ) from None
    try:
        facts = verify_backup(backup)
        if accept is not None:
            accept(facts)
        _replace_database(backup, db_path)
        write_tip(db_path, facts["height"], facts["tip_hash"], sync=True)
        _fsync_path(db_path.parent)
    finally:
        lock.release()
    log.info("restored backup=%s height=%d into %s", backup, facts["height"], db_path)
    return facts


def _replace_database(backup: Path, db_path: Path) -> None:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    temp = db_path.with_name(db_path.name + ".restore.tmp")
    shutil.copyfile(backup, temp)
    _fsync_path(temp)
    if db_path.exists():
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        kept = db_path.with_name(f"{db_path.name}.before-restore-{stamp}")
        os.replace(db_path, kept)
        wal = db_path.with_name(db_path.name + "-wal")
        if wal.exists():
            os.replace(wal, kept.with_name(kept.name + "-wal"))
    db_path.with_name(db_path.name + "-wal").unlink(missing_ok=True)
    db_path.with_name(db_path.name + "-shm").unlink(missing_ok=True)
    os.replace(temp, db_path)
    # The copy is in rollback-journal mode; the producer switches it back to WAL.
