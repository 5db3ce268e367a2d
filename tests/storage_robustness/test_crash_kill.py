"""SIGKILL the producer at random points while it commits blocks, over and over.

Each cycle starts ``weall actor producer`` on one data directory, submits
signed founder posts over the producer socket (``weall.ipc``) while blocks
commit every 20 ms, and SIGKILLs it after a random delay. Before the next
cycle the database must open, pass ``PRAGMA integrity_check``, hold only
whole blocks, hold every transaction the producer acknowledged (202) as
pending or committed, and have a tip file that names a block it contains. The
end replays the chain with ``verify_chain``.

Half of the kills come after a random delay alone. The other half come
right after the producer writes to the ``-wal`` file (an inotify
``IN_MODIFY`` event, after skipping a random number of them), so that many
kills land while a commit is writing its frames. The ``-wal`` file is read
after each kill, before anything opens the database: frames of the current
WAL generation after its last commit frame are a transaction that the kill
cut short, so their count shows how many kills landed inside a commit.

The default form aims at ``KILLS_DEFAULT`` kills but stops the loop after
``BUDGET_DEFAULT_S`` seconds, so that the whole test stays near three
minutes on a loaded machine. It then passes with as few as
``MIN_KILLS_DEFAULT`` kills, and prints how many it reached. The long form
(``--run-long``) must reach all of its kills.

Seed: ``WEALL_TEST_SEED`` (default: random, printed), read at import
because the autouse fixture clears ``WEALL_*`` variables before each test.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import random
import signal
import sqlite3
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from weall import ipc
from weall.commands.verify import verify_chain
from weall.errors import IpcError
from weall.storage.db import read_tip

from ._support import Poster, ProducerProcess, check_blocks_whole, statuses

SEED_SETTING = os.environ.get("WEALL_TEST_SEED")
KILLS_DEFAULT = 300
MIN_KILLS_DEFAULT = 100
# The drain and the final replay take about 10 to 30 s more.
BUDGET_DEFAULT_S = 140.0
KILLS_LONG = 1000
BUDGET_LONG_S = 1200.0
BATCH = 32
MAX_KILL_DELAY_S = 0.25
WAL_HEADER = struct.Struct(">IIIIIIII")
FRAME_HEADER = struct.Struct(">IIII")
WAL_FRAME_HEADER_BYTES = 24
IN_MODIFY = 0x2
MAX_SKIPPED_WRITES = 40


class WalWatch:
    """An inotify watch for writes to one file (Linux only, through libc)."""

    def __init__(self, path: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if self._libc.inotify_add_watch(self.fd, os.fsencode(path), IN_MODIFY) < 0:
            code = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(code, f"inotify_add_watch failed for {path}")

    def drain(self) -> int:
        """Read the pending events; return how many bytes of them there were."""
        total = 0
        while True:
            try:
                total += len(os.read(self.fd, 65536))
            except BlockingIOError:
                return total

    async def wait_writes(self, count: int) -> None:
        """Wait until at least ``count`` write events have arrived."""
        seen = 0
        while seen < count:
            await trio.lowlevel.wait_readable(self.fd)
            # Each event without a name is 16 bytes.
            seen += max(1, self.drain() // 16)

    def close(self) -> None:
        os.close(self.fd)


def torn_frames(wal: Path) -> int:
    """Frames of the current generation after the last commit frame of ``wal``."""
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return 0
    if len(data) < WAL_HEADER.size:
        return 0
    _, _, page_size, _, salt1, salt2, _, _ = WAL_HEADER.unpack_from(data)
    frame_bytes = WAL_FRAME_HEADER_BYTES + page_size
    after_commit = 0
    offset = WAL_HEADER.size
    while offset + frame_bytes <= len(data):
        _, commit_size, frame_salt1, frame_salt2 = FRAME_HEADER.unpack_from(
            data, offset
        )
        if (frame_salt1, frame_salt2) != (salt1, salt2):
            break
        after_commit = 0 if commit_size else after_commit + 1
        offset += frame_bytes
    return after_commit


@dataclass
class KillStats:
    """What the kill loop did and found."""

    kills: int = 0
    kills_on_write: int = 0
    torn_kills: int = 0
    torn_frames: int = 0
    acknowledged: list[str] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    startup_s: list[float] = field(default_factory=list)
    check_s: list[float] = field(default_factory=list)


class KillLoop:
    def __init__(self, workdir: Path, rng: random.Random) -> None:
        self.producer = ProducerProcess(
            workdir,
            env={"WEALL_BLOCK_INTERVAL_MS": "20", "WEALL_LOG_LEVEL": "WARNING"},
        )
        self.data = self.producer.data
        self.config = self.producer.config
        self.log_path = self.producer.log_path
        self.rng = rng
        self.stats = KillStats()
        self.poster = Poster(self.producer.founder(), 1, body_chars=400)
        self.checked_height = 0

    def close(self) -> None:
        self.producer.close()

    async def start_producer(self) -> trio.Process:
        started = time.monotonic()
        process = await self.producer.start()
        self.stats.startup_s.append(time.monotonic() - started)
        return process

    async def submit_forever(self, client: ipc.IpcClient) -> None:
        while True:
            envelopes = self.poster.envelopes(BATCH)
            try:
                answer = await client.call("submit", timeout=30.0, envelopes=envelopes)
            except IpcError:
                await trio.sleep(0.005)
                continue
            accepted = 0
            for result in answer.get("results", []):
                if result.get("http") != 202:
                    break
                self.stats.acknowledged.append(result["tx_id"])
                accepted += 1
            self.poster.next_nonce += accepted
            if accepted < len(envelopes):
                await trio.sleep(0.01)

    async def wait_kill_point(self) -> None:
        """Sleep a random delay; on every other kill, also wait for writes to the WAL."""
        await trio.sleep(self.rng.uniform(0.0, MAX_KILL_DELAY_S))
        if self.rng.random() < 0.5:
            return
        try:
            watch = WalWatch(self.data / "weall.db-wal")
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOSYS):
                raise
            return
        try:
            watch.drain()
            with trio.move_on_after(2.0):
                await watch.wait_writes(1 + self.rng.randrange(MAX_SKIPPED_WRITES))
                self.stats.kills_on_write += 1
        finally:
            watch.close()

    async def cycle(self) -> None:
        process = await self.start_producer()
        async with (
            ipc.open_client(self.config.producer_socket) as client,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self.submit_forever, client)
            await self.wait_kill_point()
            process.send_signal(signal.SIGKILL)
            nursery.cancel_scope.cancel()
        await process.wait()
        assert process.returncode == -signal.SIGKILL
        self.stats.kills += 1
        torn = torn_frames(self.data / "weall.db-wal")
        self.stats.torn_frames += torn
        self.stats.torn_kills += bool(torn)
        checked = time.monotonic()
        self.check_after_kill()
        self.stats.check_s.append(time.monotonic() - checked)

    def check_after_kill(self) -> None:
        db_path = self.data / "weall.db"
        conn = sqlite3.connect(
            f"file:{db_path}?mode=ro", uri=True, isolation_level=None
        )
        try:
            conn.execute("BEGIN")
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            head = check_blocks_whole(conn, from_height=self.checked_height)
            found = statuses(conn, self.stats.acknowledged)
            missing = [tx for tx in self.stats.acknowledged if tx not in found]
            assert not missing, (
                f"acknowledged but missing after kill {self.stats.kills}: {missing[:3]}"
            )
            assert set(found.values()) <= {"pending", "committed"}, set(found.values())
            tip = read_tip(db_path)
            if tip is not None:
                row = conn.execute(
                    "SELECT hash FROM blocks WHERE height = ?", (tip.height,)
                ).fetchone()
                assert row is not None, (
                    f"the tip file names block {tip.height}, which is missing"
                )
                assert row[0] == tip.hash, (
                    f"the tip file names another block {tip.height}"
                )
            self.poster.next_nonce = self._next_nonce(conn)
            conn.execute("COMMIT")
        finally:
            conn.close()
        self.stats.heights.append(head)
        self.checked_height = head

    @staticmethod
    def _next_nonce(conn: sqlite3.Connection) -> int:
        highest = conn.execute(
            "SELECT MAX(nonce) FROM txs WHERE signer = '@founder' AND status IN ('pending', 'committed')"
        ).fetchone()[0]
        return 1 if highest is None else int(highest) + 1

    async def drain(self) -> dict[str, Any]:
        """Start once more, let every pending transaction commit, stop with SIGTERM."""
        process = await self.start_producer()
        async with ipc.open_client(self.config.producer_socket) as client:
            with trio.fail_after(120):
                while True:
                    try:
                        status = await client.call("status", timeout=10.0)
                    except IpcError:
                        status = {}
                    if status.get("pool_size") == 0:
                        break
                    await trio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await process.wait()
        assert process.returncode == 0, f"see {self.log_path}"
        return status


async def _run_kills(
    tmp_path: Path, kills: int, budget_s: float, *, min_kills: int
) -> None:
    seed = int(SEED_SETTING or random.SystemRandom().randrange(2**32))
    print(f"\nseed={seed}")
    loop = KillLoop(tmp_path, random.Random(seed))
    started = time.monotonic()
    try:
        while loop.stats.kills < kills and time.monotonic() - started < budget_s:
            await loop.cycle()
        elapsed = time.monotonic() - started
        await loop.drain()
    finally:
        loop.close()

    stats = loop.stats
    conn = sqlite3.connect(f"file:{tmp_path / 'data' / 'weall.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        head = check_blocks_whole(conn)
        found = statuses(conn, stats.acknowledged)
        replayed = verify_chain(conn)
    finally:
        conn.close()
    assert len(found) == len(stats.acknowledged)
    assert set(found.values()) == {"committed"}
    assert replayed["height"] == head
    startup = sorted(stats.startup_s)
    print(
        json.dumps(
            {
                "kills": stats.kills,
                "kills_target": kills,
                "kills_on_wal_write": stats.kills_on_write,
                "seconds": round(elapsed, 1),
                "kills_inside_a_commit": stats.torn_kills,
                "torn_frames": stats.torn_frames,
                "acknowledged": len(stats.acknowledged),
                "lost": 0,
                "head": head,
                "txs_replayed": replayed["txs"],
                "median_start_s": round(startup[len(startup) // 2], 3),
                "mean_check_s": round(sum(stats.check_s) / len(stats.check_s), 3),
                "db_bytes": (tmp_path / "data" / "weall.db").stat().st_size,
            }
        )
    )
    assert stats.kills >= min_kills, f"only {stats.kills} kills in {budget_s} s"
    assert stats.heights[-1] > stats.heights[0], "no block was committed between kills"


@pytest.mark.slow
async def test_producer_survives_sigkill_storm(tmp_path: Path) -> None:
    await _run_kills(
        tmp_path, KILLS_DEFAULT, BUDGET_DEFAULT_S, min_kills=MIN_KILLS_DEFAULT
    )


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(BUDGET_LONG_S + 300)
async def test_producer_survives_long_sigkill_storm(tmp_path: Path) -> None:
    await _run_kills(tmp_path, KILLS_LONG, BUDGET_LONG_S, min_kills=KILLS_LONG)
