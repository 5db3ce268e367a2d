"""The checkpointer keeps the WAL under its limit while signed posts and reads flow.

One node, three phases under the same write load (batches of founder posts
through ``/v1/tx/batch``) and a read loop (``/v1/accounts`` and
``/v1/feed``): steady load, a long read transaction, and a live backup.
The ``-wal`` file is sampled every 10 ms throughout.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from ._support import LoadThread, Poster, ReadLoop, StorageNode, WalSampler, wait_for

pytestmark = pytest.mark.slow

WAL_MAX_BYTES = 8 * 1024 * 1024
CHECKPOINT_INTERVAL_S = 1.0
# Truncated means the file is back below this size.
TRUNCATED_BYTES = 1024 * 1024
STEADY_S = 12.0
HOLD_S = 6.0


def _truncated_after(sampler: WalSampler, moment: float) -> float | None:
    """Seconds from ``moment`` to the first sample below ``TRUNCATED_BYTES``."""
    for sampled_at, size in sampler.samples:
        if sampled_at >= moment and size < TRUNCATED_BYTES:
            return sampled_at - moment
    return None


def _hold_snapshot(db_path: Path, seconds: float) -> tuple[float, int]:
    """Keep a read transaction open for ``seconds``; return when it ended and what it saw."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        height = conn.execute("SELECT MAX(height) FROM blocks").fetchone()[0]
        time.sleep(seconds)
        conn.execute("COMMIT")
        return time.monotonic(), int(height)
    finally:
        conn.close()


def test_wal_bounded_under_load(tmp_path: Path) -> None:
    node = StorageNode(
        tmp_path,
        env={
            "WEALL_WAL_MAX_BYTES": str(WAL_MAX_BYTES),
            "WEALL_CHECKPOINT_INTERVAL_S": str(CHECKPOINT_INTERVAL_S),
            "WEALL_BLOCK_INTERVAL_MS": "250",
        },
    )
    node.start()
    try:
        node.wait_ready()
        sampler = WalSampler(node.db_path)
        sampler.start()
        poster = Poster(node.founder(), node.next_nonce(), body_chars=4000)
        load = LoadThread(node, poster, batch=64, pause_s=0.0, duration_s=120)
        reads = [ReadLoop(node, duration_s=120) for _ in range(2)]
        for thread in (load, *reads):
            thread.start()

        # Phase 1: steady load.
        steady_from = time.monotonic()
        time.sleep(STEADY_S)
        steady_max = sampler.max_size(since=steady_from)
        steady_acks = len(load.stats.acknowledged)

        # Phase 2: a long read transaction, then its end.
        hold_started = time.monotonic()
        released, _ = _hold_snapshot(node.db_path, HOLD_S)
        held_max = sampler.max_size(since=hold_started)
        time.sleep(2 * CHECKPOINT_INTERVAL_S)
        after_reader = _truncated_after(sampler, released)

        # Phase 3: a live backup; its manifest appears as the command ends.
        backup_started = time.monotonic()
        backup = node.cli_json("backup", "--no-prune", timeout=120)
        backup_done = time.monotonic()
        time.sleep(2 * CHECKPOINT_INTERVAL_S)
        after_backup = _truncated_after(sampler, backup_done)

        load.stop()
        for thread in reads:
            thread.stop()
        sampler.stop()

        print(
            f"\nsteady: {steady_acks} posts in {STEADY_S} s, WAL max "
            f"{steady_max / 2**20:.2f} MiB of {WAL_MAX_BYTES / 2**20:.0f} MiB; "
            f"reads {sum(r.count for r in reads)}; long reader: WAL max "
            f"{held_max / 2**20:.2f} MiB in {HOLD_S} s, truncated {after_reader} s after it "
            f"ended; backup of {backup['size_bytes'] / 2**20:.1f} MiB took "
            f"{backup_done - backup_started:.2f} s, truncated {after_backup} s from its end"
        )
        # Pinned by the reader, the WAL outgrew the limit in HOLD_S: the same
        # load over STEADY_S would have too, without the checkpoints.
        assert held_max > WAL_MAX_BYTES, "the load wrote too little to test the limit"
        assert STEADY_S >= HOLD_S
        assert steady_max <= WAL_MAX_BYTES
        assert after_reader is not None, (
            "the WAL was not truncated after the long reader"
        )
        assert after_reader <= CHECKPOINT_INTERVAL_S
        assert after_backup is not None, "the WAL was not truncated after the backup"
        assert after_backup <= CHECKPOINT_INTERVAL_S

        for reader in reads:
            assert not reader.errors, reader.errors[:3]
            assert set(reader.statuses) == {200}, reader.statuses
        assert not load.stats.errors, load.stats.errors[:3]
        assert load.stats.rejected == {}, load.stats.rejected
        last = load.stats.acknowledged[-1]
        wait_for(
            lambda: node.get(f"/v1/tx/{last}").json().get("status") == "committed",
            timeout=60,
            what="the last acknowledged post to commit",
        )
        assert "checkpoint after backup mode=TRUNCATE busy=False" in node.log()
        busy_lines = [
            line for line in node.log().splitlines() if "checkpoint busy" in line
        ]
        assert busy_lines, "the long reader made no checkpoint report busy"
        # One line per busy episode (rate-limited), not one per retry.
        assert len(busy_lines) <= 2 * (HOLD_S + 10) / CHECKPOINT_INTERVAL_S / 10 + 4
    finally:
        node.stop()
