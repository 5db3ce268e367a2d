"""Scheduled backups (``WEALL_BACKUP_INTERVAL_S``) on a real node.

The schedule is timed from the newest backup's ``created_ms``, so a backup
is due at start when the newest one is older than the interval, and
restarts do not hold it back. After each backup the checkpointer truncates
the WAL, and retention prunes the older backups.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from pathlib import Path

import pytest

from weall.actors.checkpointer import next_backup_due
from weall.storage.backup import list_manifests, take_backup

from ._support import LoadThread, Poster, StorageNode, WalSampler, wait_for

INTERVAL_S = 2
SCHEDULED = re.compile(r"scheduled backup done file=(\S+)")
PRUNED = re.compile(r"backup pruned file=(\S+)")
AFTER_BACKUP = re.compile(r"checkpoint after backup mode=(\w+) busy=(\w+)")


class ManifestWatch(threading.Thread):
    """Records the monotonic time at which each ``weall-*.json`` manifest first appears."""

    def __init__(self, backup_dir: Path, *, interval_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.backup_dir = backup_dir
        self.interval_s = interval_s
        self.seen: dict[str, float] = {}
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)

    def run(self) -> None:
        while not self._stop_event.is_set():
            if self.backup_dir.is_dir():
                now = time.monotonic()
                for path in self.backup_dir.glob("weall-*.json"):
                    self.seen.setdefault(path.with_suffix(".db").name, now)
            self._stop_event.wait(self.interval_s)


def _shrank_within(
    sampler: WalSampler, start: float, end: float
) -> tuple[float, int, int] | None:
    """The first drop of the ``-wal`` file's size sampled in ``[start, end]``.

    Only a TRUNCATE checkpoint makes the file smaller: a PASSIVE one (and
    SQLite's automatic checkpoints) rewrite it from its start in place.
    """
    samples = sampler.samples
    for (_, before), (moment, after) in zip(samples, samples[1:], strict=False):
        if start <= moment <= end and after < before:
            return moment, before, after
    return None


@pytest.mark.slow
def test_scheduled_backups_prune_and_truncate_wal(tmp_path: Path) -> None:
    node = StorageNode(
        tmp_path,
        env={
            "WEALL_BACKUP_INTERVAL_S": str(INTERVAL_S),
            "WEALL_BLOCK_INTERVAL_MS": "200",
            # No checkpoint rounds of their own: every TRUNCATE in this test
            # is one that follows a backup.
            "WEALL_CHECKPOINT_INTERVAL_S": "3600",
        },
    )
    watch = ManifestWatch(node.data / "backups")
    watch.start()
    node.start()
    sampler = WalSampler(node.db_path, interval_s=0.005)
    try:
        node.wait_ready()
        sampler.start()
        poster = Poster(node.founder(), node.next_nonce(), body_chars=2000)
        load = LoadThread(node, poster, batch=20, pause_s=0.1, duration_s=120)
        load.start()
        # The -wal file grows between backups only while the load runs.
        load_from = time.monotonic() + 1.0
        wait_for(
            lambda: len(watch.seen) >= 8,
            timeout=90,
            what="eight scheduled backups",
        )
        load.stop()
        load_until = time.monotonic()
        assert not load.stats.errors, load.stats.errors[:3]
        # The last backup's truncation may still be under way.
        time.sleep(2.0)
    finally:
        sampler.stop()
        watch.stop()
        assert node.stop() == 0

    log = node.log()
    taken = SCHEDULED.findall(log)
    pruned = PRUNED.findall(log)
    remaining = sorted(m.file for m in list_manifests(node.data / "backups"))
    print(
        f"\n{len(taken)} scheduled backups, {len(pruned)} pruned, "
        f"{len(remaining)} kept: {remaining}"
    )
    assert len(taken) >= 8
    assert set(watch.seen) <= set(taken), "a backup the schedule did not take"
    # Retention (7 daily, 4 weekly) keeps the newest of each UTC day, so a
    # run that crosses midnight keeps two.
    assert 1 <= len(remaining) <= 2, remaining
    assert set(pruned) == set(taken) - set(remaining)
    assert not list((node.data / "backups").glob("*.tmp"))

    after_backup = AFTER_BACKUP.findall(log)
    assert len(after_backup) >= len(taken) - 1, after_backup
    assert all(mode == "TRUNCATE" for mode, _ in after_backup), after_backup
    # The -wal file shrank after each backup taken under load, within a few
    # of the checkpointer's polls for new manifests.
    under_load = [
        (name, seen_at)
        for name, seen_at in watch.seen.items()
        if load_from <= seen_at <= load_until - 3.0
    ]
    assert len(under_load) >= 3, (watch.seen, load_from, load_until)
    for name, seen_at in under_load:
        shrank = _shrank_within(sampler, seen_at - 0.5, seen_at + 3.0)
        assert shrank is not None, f"the WAL did not shrink after {name}"

    for name in remaining:
        verified = node.cli_json(
            "backup", "--verify", str(node.data / "backups" / name)
        )
        assert verified["manifest"] == "matched"


@pytest.mark.slow
def test_schedule_survives_frequent_restarts(tmp_path: Path) -> None:
    interval_s = 6
    node = StorageNode(tmp_path, env={"WEALL_BACKUP_INTERVAL_S": str(interval_s)})
    started = time.monotonic()
    runs = 0
    # Each run lasts about half an interval, so a schedule that restarted
    # with the node would never take a backup after the first.
    while runs < 6:
        node.start()
        try:
            node.wait_ready()
            time.sleep(interval_s / 2)
        finally:
            assert node.stop() == 0
        runs += 1
    elapsed = time.monotonic() - started

    taken = SCHEDULED.findall(node.log())
    print(f"\n{len(taken)} scheduled backups in {runs} runs over {elapsed:.0f} s")
    # One at the first start, then one each time the newest is an interval old.
    assert len(taken) >= min(4, int(elapsed // interval_s)), taken
    assert len(taken) <= elapsed // interval_s + 1, taken
    assert len(set(taken)) == len(taken)


def test_schedule_due_from_newest_manifest(small_db: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    now = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
    now_ms = int(now.timestamp() * 1000)

    assert next_backup_due(backups, 3600, now_ms) == (0.0, None)

    old = take_backup(small_db, backups, now=now - dt.timedelta(hours=2))
    wait_s, newest = next_backup_due(backups, 3600, now_ms)
    assert wait_s == 0.0
    assert newest == old

    recent = take_backup(small_db, backups, now=now - dt.timedelta(minutes=10))
    wait_s, newest = next_backup_due(backups, 3600, now_ms)
    assert wait_s == pytest.approx(3000.0)
    assert newest == recent

    # A backup dated in the future (the clock went back) does not count.
    take_backup(small_db, backups, now=now + dt.timedelta(days=1))
    wait_s, newest = next_backup_due(backups, 3600, now_ms)
    assert wait_s == pytest.approx(3000.0)
    assert newest == recent

    # A backup whose file is gone does not count either.
    (backups / recent.file).unlink()
    wait_s, newest = next_backup_due(backups, 3600, now_ms)
    assert wait_s == 0.0
    assert newest == old
