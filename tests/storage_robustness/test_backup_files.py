"""The files of a backup directory: its lock, leftover temporary files, manifests.

A backup holds ``backup.lock`` in its directory while it runs. Whatever
``weall-*.db.tmp`` or ``weall-*.json.tmp`` a killed backup left behind is
deleted by the next backup, which holds the lock, so no running backup owns
it. The manifest records the checks that the copy passed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from weall.storage.backup import (
    LOCK_NAME,
    BackupInProgressError,
    take_backup,
    verify_backup,
)
from weall.storage.lock import FileLock

from ._support import StorageNode, build_chain, wait_for

STALE_NAMES = (
    "weall-20240101T000000000000Z.db.tmp",
    "weall-20240101T000000000000Z.json.tmp",
)


def _leave_stale_temps(backups: Path) -> list[Path]:
    backups.mkdir(parents=True, exist_ok=True)
    paths = [backups / name for name in STALE_NAMES]
    for path in paths:
        path.write_bytes(os.urandom(4096))
    return paths


def test_backup_removes_stale_temps(
    small_db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backups = tmp_path / "backups"
    stale = _leave_stale_temps(backups)

    with caplog.at_level(logging.WARNING, logger="weall.storage.backup"):
        manifest = take_backup(small_db, backups)

    assert not any(path.exists() for path in stale)
    assert sorted(p.name for p in backups.iterdir()) == sorted(
        [LOCK_NAME, manifest.file, manifest.file.replace(".db", ".json")]
    )
    removed = [
        r.getMessage() for r in caplog.records if "unfinished backup" in r.message
    ]
    assert len(removed) == 2, removed
    assert all("size_bytes=4096" in line for line in removed)


def test_backup_fails_while_another_holds_lock(small_db: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    stale = _leave_stale_temps(backups)
    other = FileLock(backups / LOCK_NAME)
    assert other.try_acquire() is None
    try:
        with pytest.raises(BackupInProgressError, match=f"pid {os.getpid()}"):
            take_backup(small_db, backups)
        # The holder may own these, so they stay.
        assert all(path.exists() for path in stale)
        assert not list(backups.glob("weall-*.db"))
    finally:
        other.release()


def test_backup_waits_for_lock(small_db: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    other = FileLock(backups / LOCK_NAME)
    assert other.try_acquire() is None
    steps: list[str] = []
    released_at: list[float] = []

    def release_later() -> None:
        time.sleep(0.5)
        released_at.append(time.monotonic())
        other.release()

    releaser = threading.Thread(target=release_later)
    releaser.start()
    try:
        manifest = take_backup(
            small_db, backups, wait_s=30.0, on_step=lambda step, _: steps.append(step)
        )
        finished = time.monotonic()
    finally:
        releaser.join()
    assert finished > released_at[0]
    assert steps == ["waiting", "copying", "verifying", "hashing"]
    assert (backups / manifest.file).exists()


def test_manifest_records_verification(small_db: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    before_ms = int(time.time() * 1000)
    manifest = take_backup(small_db, backups)
    stored = json.loads((backups / manifest.file).with_suffix(".json").read_text())

    check = stored["verification"]
    assert check["integrity_check"] == "ok"
    assert check["height"] == stored["height"] == 0
    assert check["tip_hash"] == stored["tip_hash"]
    assert check["genesis_hash"] == stored["genesis_hash"]
    assert check["schema_version"] == stored["schema_version"]
    assert before_ms <= check["verified_at_ms"] <= int(time.time() * 1000)
    assert check["duration_s"] >= 0
    assert stored["mtime_ns"] == (backups / manifest.file).stat().st_mtime_ns
    conn = sqlite3.connect(small_db)
    try:
        genesis = conn.execute(
            "SELECT value FROM meta WHERE key = 'genesis_hash'"
        ).fetchone()[0]
    finally:
        conn.close()
    assert check["genesis_hash"] == genesis
    assert verify_backup(backups / manifest.file)["manifest"] == "matched"


def _start_backup(node: StorageNode) -> subprocess.Popen[str]:
    """Start ``weall backup --no-prune`` in the background, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "weall", "backup", "--no-prune"],
        cwd=node.workdir,
        env=node.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_killed_backup_leftover_removed(tmp_path: Path) -> None:
    """SIGKILL ``weall backup`` while it copies; the next one deletes what it left."""
    build_chain(tmp_path / "data", blocks=12, posts_per_block=30, body_chars=15500)
    node = StorageNode(tmp_path)
    backups = node.data / "backups"
    killed = _start_backup(node)
    try:
        # Killed once the copy has begun to fill its temporary file.
        temp = wait_for(
            lambda: next(
                (p for p in backups.glob("weall-*.db.tmp") if p.stat().st_size > 0),
                None,
            ),
            timeout=60,
            what="the backup's temporary file to grow",
            interval=0.002,
        )
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=30)
    assert temp.exists(), "the backup finished before it was killed"
    left_bytes = temp.stat().st_size

    result = node.cli("backup", "--no-prune", timeout=300)

    assert result.returncode == 0, result.stderr
    print(f"\nkilled backup left {left_bytes} bytes in {temp.name}")
    assert not temp.exists()
    assert not list(backups.glob("*.tmp"))
    removed = [
        line for line in result.stderr.splitlines() if "unfinished backup" in line
    ]
    assert len(removed) == 1, result.stderr
    assert f"/{temp.name} size_bytes={left_bytes}" in removed[0]
    manifest = json.loads(result.stdout.strip().splitlines()[-1])
    assert verify_backup(backups / manifest["file"])["manifest"] == "matched"


@pytest.mark.slow
def test_concurrent_cli_backups_both_finish(tmp_path: Path) -> None:
    build_chain(tmp_path / "data", blocks=6, posts_per_block=30, body_chars=15500)
    node = StorageNode(tmp_path)
    holder = FileLock(node.data / "backups" / LOCK_NAME)
    assert holder.try_acquire() is None
    try:
        waiting = _start_backup(node)
        time.sleep(1.0)
        assert waiting.poll() is None, "the backup did not wait for the lock"
    finally:
        holder.release()
    second = node.cli_json("backup", "--no-prune", timeout=300)
    stdout, stderr = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, stderr
    first = json.loads(stdout.strip().splitlines()[-1])
    assert f"another backup (pid {os.getpid()})" in stderr
    assert "waiting for it to finish" in stderr
    assert first["file"] != second["file"]
    for manifest in (first, second):
        facts = verify_backup(node.data / "backups" / manifest["file"])
        assert facts["manifest"] == "matched"
    assert not list((node.data / "backups").glob("*.tmp"))
