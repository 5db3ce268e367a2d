"""A running node folds the recent state into the state table between blocks."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from weall import ipc

from ._support import StorageNode, build_chain, wait_for

pytestmark = pytest.mark.slow


def _waiting(db_path: Path) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM state_recent").fetchone()[0])
    finally:
        conn.close()


async def _producer_status(socket: Path) -> dict[str, Any]:
    async with ipc.open_client(socket) as client:
        return dict(await client.call("status", timeout=20.0))


@pytest.mark.parametrize("interval_ms", [None, 50], ids=["default-interval", "50ms"])
def test_idle_node_folds_waiting_state(tmp_path: Path, interval_ms: int | None) -> None:
    # The chain is built without a producer, so every change it made still
    # waits in state_recent (below the limit past which a commit folds).
    built = build_chain(
        tmp_path / "data", blocks=16, posts_per_block=250, body_chars=200
    )
    db_path = tmp_path / "data" / "weall.db"
    waiting = _waiting(db_path)
    assert waiting > 3 * built.posts

    # With a 50 ms interval the next block is never 100 ms away, so the node
    # folds only because its pool is empty.
    env = {} if interval_ms is None else {"WEALL_BLOCK_INTERVAL_MS": str(interval_ms)}
    node = StorageNode(tmp_path, env=env)
    node.start()
    try:
        node.wait_ready()
        feed = node.get("/v1/feed?limit=100").json()["items"]
        assert len(feed) == 100
        wait_for(
            lambda: _waiting(db_path) == 0, timeout=60, what="state_recent to empty"
        )
        assert node.get("/v1/feed?limit=100").json()["items"] == feed
        assert node.get("/health").json()["storage"]["recent_state_entries"] == 0
        producer = trio.run(_producer_status, node.run_dir / "producer.sock")
        assert producer["recent_state_entries"] == 0
        assert producer["folded_state_entries"] >= waiting
    finally:
        assert node.stop() == 0
    verify = node.cli("verify")
    assert verify.returncode == 0, verify.stderr
