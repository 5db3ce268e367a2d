"""A busy TRUNCATE checkpoint is retried with backoff until the old reader ends.

A real producer process commits blocks while this test holds a read
transaction on a snapshot older than the WAL's end, so every TRUNCATE
checkpoint that the producer runs for the checkpointer's code
(``truncate_with_retries``) is busy. The reader ends after ``HOLD_S``; the
retries must then succeed and the ``-wal`` file must shrink.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import trio

from weall import ipc
from weall.actors.checkpointer import (
    RETRY_FIRST_S,
    RETRY_MAX_S,
    checkpoint_round,
    truncate_with_retries,
    wal_size,
)

from ._support import Poster, ProducerProcess

pytestmark = pytest.mark.slow

HOLD_S = 1.5


async def _commit_posts(client: ipc.IpcClient, poster: Poster, count: int) -> int:
    """Submit ``count`` posts and wait until a block holds them; return its height."""
    answer = await client.call(
        "submit", timeout=30.0, envelopes=poster.envelopes(count)
    )
    assert [r["http"] for r in answer["results"]] == [202] * count, answer
    poster.next_nonce += count
    with trio.fail_after(60):
        while True:
            status = await client.call("status", timeout=10.0)
            if status["pool_size"] == 0:
                return int(status["height"])
            await trio.sleep(0.02)


def _expected_delays(count: int) -> list[float]:
    delays, delay = [], RETRY_FIRST_S
    for _ in range(count):
        delays.append(delay)
        delay = min(delay * 2, RETRY_MAX_S)
    return delays


async def test_busy_truncate_retried_until_reader_ends(tmp_path: Path) -> None:
    producer = ProducerProcess(tmp_path, env={"WEALL_BLOCK_INTERVAL_MS": "50"})
    process = await producer.start()
    try:
        async with ipc.open_client(producer.config.producer_socket) as client:
            poster = Poster(producer.founder(), 1, body_chars=2000)
            await _commit_posts(client, poster, 20)

            reader = sqlite3.connect(
                f"file:{producer.config.db_path}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
            reader.execute("BEGIN")
            seen = reader.execute("SELECT MAX(height) FROM blocks").fetchone()[0]
            # Blocks after the reader's snapshot: the WAL's end moves past it.
            height = await _commit_posts(client, poster, 20)
            assert height > seen

            ended_at: list[float] = []

            def end_reader() -> None:
                time.sleep(HOLD_S)
                reader.execute("COMMIT")
                reader.close()
                ended_at.append(time.monotonic())

            started = time.monotonic()
            thread = threading.Thread(target=end_reader)
            thread.start()
            try:
                result = await truncate_with_retries(client, budget_s=60.0)
            finally:
                await trio.to_thread.run_sync(thread.join)
            finished = time.monotonic()
            wal_after = wal_size(producer.config.db_path)

            print(
                f"\n{result.attempts} attempts over {finished - started:.2f} s, "
                f"pauses {list(result.delays_s)}, reader held {HOLD_S} s, "
                f"-wal {wal_after} bytes after"
            )
            assert result.answer["busy"] == 0
            assert result.attempts >= 4
            assert list(result.delays_s) == _expected_delays(result.attempts - 1)
            # The attempt that succeeded came after the reader ended.
            assert finished >= ended_at[0]
            assert sum(result.delays_s) >= HOLD_S - RETRY_MAX_S

            # A TRUNCATE round with no old reader left is not busy.
            round_ = await checkpoint_round(client, producer.config, truncate=True)
            assert round_.mode == "TRUNCATE"
            assert not round_.busy
            assert round_.retries == 0
        assert wal_after < 64 * 1024, "the -wal file did not shrink"
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await process.wait()
        producer.close()
    assert process.returncode == 0, producer.log_path.read_text()
