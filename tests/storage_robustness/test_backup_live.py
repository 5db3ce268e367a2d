"""Live backups: a 200 MB database backed up while blocks keep coming, and retention."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import time
from pathlib import Path

import pytest

from weall.errors import StorageError
from weall.storage.backup import (
    list_manifests,
    prune_backups,
    take_backup,
    verify_backup,
)

from ._support import LoadThread, Poster, StorageNode, build_chain, wait_for

BLOCK_INTERVAL_MS = 500
MIN_DB_BYTES = 200 * 1024 * 1024


def _blocks_between(
    db_path: Path, start_ms: int, end_ms: int
) -> list[tuple[int, int, int]]:
    """``(height, timestamp_ms, tx_count)`` of the blocks in the window and one on each side."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        first = conn.execute(
            "SELECT COALESCE(MAX(height), 0) FROM blocks WHERE timestamp_ms < ?",
            (start_ms,),
        ).fetchone()[0]
        last = conn.execute(
            "SELECT COALESCE(MIN(height), (SELECT MAX(height) FROM blocks)) FROM blocks"
            " WHERE timestamp_ms > ?",
            (end_ms,),
        ).fetchone()[0]
        return conn.execute(
            "SELECT height, timestamp_ms, tx_count FROM blocks WHERE height BETWEEN ? AND ?"
            " ORDER BY height",
            (first, last),
        ).fetchall()
    finally:
        conn.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_backup_under_load_keeps_block_cadence(tmp_path: Path) -> None:
    built = build_chain(
        tmp_path / "data", blocks=60, posts_per_block=30, body_chars=15500
    )
    db_bytes = (tmp_path / "data" / "weall.db").stat().st_size
    assert db_bytes >= MIN_DB_BYTES, f"fixture database is only {db_bytes} bytes"
    print(
        f"\nbuilt {db_bytes / 2**20:.0f} MiB, {built.posts} posts in {built.seconds:.1f} s"
    )

    node = StorageNode(
        tmp_path,
        env={
            "WEALL_BLOCK_INTERVAL_MS": str(BLOCK_INTERVAL_MS),
            "WEALL_CHECKPOINT_INTERVAL_S": "1",
        },
    )
    node.start()
    try:
        node.wait_ready(timeout=120)
        poster = Poster(node.founder(), built.founder_next_nonce, body_chars=400)
        load = LoadThread(node, poster, batch=10, pause_s=0.05, duration_s=180)
        load.start()
        start_height = node.head()["height"]
        wait_for(
            lambda: node.head()["height"] >= start_height + 4,
            timeout=30,
            what="blocks under load before the backup",
        )

        started_ms = int(time.time() * 1000)
        manifest = node.cli_json("backup", "--no-prune", timeout=300)
        ended_ms = int(time.time() * 1000)
        after = node.head()["height"]
        wait_for(
            lambda: node.head()["height"] >= after + 3,
            timeout=30,
            what="blocks after the backup",
        )
        load.stop()
        assert not load.stats.errors, load.stats.errors[:3]
        assert load.stats.rejected == {}, load.stats.rejected

        blocks = _blocks_between(node.db_path, started_ms, ended_ms)
        gaps = [b[1] - a[1] for a, b in zip(blocks, blocks[1:], strict=False)]
        print(
            f"backup took {(ended_ms - started_ms) / 1000:.1f} s, "
            f"{manifest['size_bytes'] / 2**20:.0f} MiB, duration_s={manifest['duration_s']}; "
            f"{len(blocks)} blocks around it, longest gap {max(gaps)} ms "
            f"(interval {BLOCK_INTERVAL_MS} ms)"
        )
        assert len(blocks) >= 3
        assert max(gaps) <= 2 * BLOCK_INTERVAL_MS, gaps
        assert all(count > 0 for _, _, count in blocks[1:-1]), "an interval had no load"

        backup = node.workdir / manifest["path"]
        _check_manifest(node, backup, manifest)
        verify_from = time.monotonic()
        verified = node.cli_json("backup", "--verify", str(backup))
        print(f"backup --verify took {time.monotonic() - verify_from:.2f} s")
        assert verified["height"] == manifest["height"]
        assert verified["manifest"] == "matched"

        # The producer lock is checked before the backup is verified.
        rejected_from = time.monotonic()
        rejected = node.cli("restore", str(backup))
        rejected_s = time.monotonic() - rejected_from
        print(f"restore of the running node rejected in {rejected_s:.2f} s")
        assert rejected.returncode == 1
        assert "stop the node before restoring" in rejected.stderr
    finally:
        node.stop()


def _check_manifest(
    node: StorageNode, backup: Path, manifest: dict[str, object]
) -> None:
    stored = json.loads(backup.with_suffix(".json").read_text(encoding="utf-8"))
    for name in ("file", "height", "tip_hash", "sha256", "size_bytes", "created_ms"):
        assert stored[name] == manifest[name], name
    assert stored["file"] == backup.name
    assert stored["size_bytes"] == backup.stat().st_size
    assert stored["sha256"] == _sha256(backup)
    assert stored["size_bytes"] >= MIN_DB_BYTES
    conn = sqlite3.connect(f"file:{node.db_path}?mode=ro", uri=True)
    try:
        live_hash = conn.execute(
            "SELECT hash FROM blocks WHERE height = ?", (stored["height"],)
        ).fetchone()[0]
        genesis = conn.execute(
            "SELECT value FROM meta WHERE key = 'genesis_hash'"
        ).fetchone()[0]
    finally:
        conn.close()
    assert stored["tip_hash"] == live_hash
    assert stored["genesis_hash"] == genesis
    assert stored["chain_id"] == "weall-dev"
    assert not list(backup.parent.glob("*.tmp")), "a temporary file was left behind"


# -- retention ---------------------------------------------------------------------


def _expected_kept(
    moments: list[dt.datetime], daily: int, weekly: int
) -> set[dt.datetime]:
    """The retention rule, written independently of ``prune_backups``."""
    newest_per_day: dict[dt.date, dt.datetime] = {}
    newest_per_week: dict[tuple[int, int], dt.datetime] = {}
    for moment in moments:
        day = moment.date()
        week = (moment.isocalendar().year, moment.isocalendar().week)
        newest_per_day[day] = max(newest_per_day.get(day, moment), moment)
        newest_per_week[week] = max(newest_per_week.get(week, moment), moment)
    days = sorted(newest_per_day, reverse=True)[:daily]
    weeks = sorted(newest_per_week, reverse=True)[:weekly]
    return {newest_per_day[d] for d in days} | {newest_per_week[w] for w in weeks}


def test_retention_keeps_seven_daily_four_weekly(
    small_db: Path, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    start = dt.datetime(2025, 3, 1, 1, 0, tzinfo=dt.UTC)
    moments = []
    for day in range(45):
        # Two backups a day on some days: only the newer may survive.
        for hour in (1, 13) if day % 3 == 0 else (7,):
            moment = start + dt.timedelta(days=day, hours=hour)
            take_backup(small_db, backups, now=moment)
            prune_backups(backups, keep_daily=7, keep_weekly=4)
            moments.append(moment)

    kept = {
        dt.datetime.fromtimestamp(m.created_ms / 1000, dt.UTC)
        for m in list_manifests(backups)
    }
    assert kept == _expected_kept(moments, 7, 4)
    assert len([m for m in kept if m >= moments[-1] - dt.timedelta(days=7)]) >= 7
    db_files = sorted(p.name for p in backups.glob("*.db"))
    json_files = sorted(p.with_suffix(".db").name for p in backups.glob("*.json"))
    assert db_files == json_files, "every kept backup has its manifest and nothing more"
    for manifest in list_manifests(backups):
        facts = verify_backup(backups / manifest.file)
        assert facts["manifest"] == "matched"


def test_retention_always_keeps_newest(small_db: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    moment = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    take_backup(small_db, backups, now=moment)
    newest = take_backup(small_db, backups, now=moment + dt.timedelta(days=1))
    deleted = prune_backups(backups, keep_daily=0, keep_weekly=0)
    assert len(deleted) == 1
    assert [m.file for m in list_manifests(backups)] == [newest.file]


def test_verify_rejects_changed_backup(small_db: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    manifest = take_backup(small_db, backups)
    path = backups / manifest.file
    data = bytearray(path.read_bytes())
    # One byte inside the last page's content: the structure stays valid,
    # so only the manifest's SHA-256 can tell.
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="SHA-256"):
        verify_backup(path)
