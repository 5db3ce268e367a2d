"""A damaged database is rejected at start with what was found and what to do.

Each case damages a copy of one stopped node's data directory, starts
``weall supervise`` on it, and expects exit code 78, one line on stderr
that names the problem and tells the operator to restore a backup, and no
change to the files.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from weall.protocol.envelope import build_envelope

from ._support import POST, StorageNode, wait_for

pytestmark = pytest.mark.slow

EXIT_CONFIG = 78
PAGE = 4096


def _post_many(node: StorageNode, count: int) -> None:
    founder, nonce = node.founder(), node.next_nonce()
    envelopes = [
        build_envelope(
            founder,
            chain_id="weall-dev",
            tx_type=POST,
            signer="@founder",
            nonce=nonce + n,
            payload={"body": f"post {n} " + "x" * 300},
        )
        for n in range(count)
    ]
    response = node.post("/v1/tx/batch", json={"envelopes": envelopes})
    assert response.status_code == 200, response.text
    last = response.json()["results"][-1]["tx_id"]
    wait_for(
        lambda: node.get(f"/v1/tx/{last}").json().get("status") == "committed",
        timeout=30,
        what="the posts to commit",
    )


@pytest.fixture(scope="module")
def stopped_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory of a node that committed some blocks and stopped cleanly."""
    workdir = tmp_path_factory.mktemp("stopped")
    node = StorageNode(workdir, env={"WEALL_BLOCK_INTERVAL_MS": "100"})
    node.start()
    try:
        node.wait_ready()
        for _ in range(3):
            _post_many(node, 60)
    finally:
        assert node.stop() == 0
    assert not (workdir / "data" / "weall.db-wal").exists()
    return workdir


def _copy(stopped: Path, tmp_path: Path) -> StorageNode:
    shutil.copytree(stopped / "data", tmp_path / "data")
    return StorageNode(tmp_path)


def _snapshot(data: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in data.iterdir()
        if p.is_file() and "lock" not in p.name
    }


def _rejected_start(node: StorageNode) -> str:
    """Start ``node``, expect it to be rejected, and return its one stderr line."""
    before = _snapshot(node.data)
    node.start()
    assert node.process is not None
    code = node.process.wait(60)
    log = node.log()
    assert code == EXIT_CONFIG, log
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if line.startswith("weall supervise: ")]
    assert len(lines) == 1, log
    assert "restore a backup with `weall restore FILE`" in lines[0], lines[0]
    assert _snapshot(node.data) == before, "a rejected start changed a file"
    return lines[0]


def _page_of(db_path: Path, table: str) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno"
            " LIMIT 1 OFFSET 1",
            (table,),
        ).fetchone()
    finally:
        conn.close()
    assert row is not None, f"no second leaf page of {table}"
    return int(row[0])


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def test_garbage_in_table_page_rejected(stopped_node: Path, tmp_path: Path) -> None:
    node = _copy(stopped_node, tmp_path)
    page = _page_of(node.db_path, "txs")
    _overwrite(node.db_path, (page - 1) * PAGE, random.Random(page).randbytes(PAGE))
    line = _rejected_start(node)
    assert "is damaged" in line
    assert "quick_check" in line or "malformed" in line, line


def test_garbage_in_schema_page_rejected(stopped_node: Path, tmp_path: Path) -> None:
    node = _copy(stopped_node, tmp_path)
    # Page 1 after the 100-byte file header contains the schema's b-tree.
    _overwrite(node.db_path, 100, random.Random(1).randbytes(PAGE - 100))
    line = _rejected_start(node)
    assert "is damaged" in line


def test_overwritten_header_rejected(stopped_node: Path, tmp_path: Path) -> None:
    node = _copy(stopped_node, tmp_path)
    _overwrite(node.db_path, 0, b"\x00" * 100)
    line = _rejected_start(node)
    assert "no SQLite header" in line


@pytest.mark.parametrize(
    "keep",
    [lambda size: size - 1000, lambda size: (size // PAGE // 2) * PAGE],
    ids=["mid-page", "page-aligned"],
)
def test_truncated_file_rejected(
    stopped_node: Path, tmp_path: Path, keep: Callable[[int], int]
) -> None:
    node = _copy(stopped_node, tmp_path)
    size = node.db_path.stat().st_size
    os.truncate(node.db_path, keep(size))
    line = _rejected_start(node)
    assert "truncated" in line, line


def test_copy_without_wal_rejected(tmp_path: Path) -> None:
    # No checkpoint round in the test's time, and too few pages for SQLite's
    # own automatic checkpoint: the blocks after the first live in the -wal.
    source = tmp_path / "source"
    source.mkdir()
    node = StorageNode(
        source,
        env={"WEALL_BLOCK_INTERVAL_MS": "100", "WEALL_CHECKPOINT_INTERVAL_S": "3600"},
    )
    node.start()
    try:
        node.wait_ready()
        for _ in range(3):
            _post_many(node, 10)
        assert (node.data / "weall.db-wal").stat().st_size > 0
        height = node.head()["height"]
        wait_for(
            lambda: (
                (node.data / "weall.db.tip").read_text().find(f'"height": {height}') > 0
            ),
            timeout=10,
            what="the tip file to catch up",
        )
        # The crash copy: everything but the -wal and -shm files, while the node runs.
        copy = tmp_path / "copy"
        shutil.copytree(
            node.data,
            copy / "data",
            ignore=shutil.ignore_patterns("*-wal", "*-shm", "run"),
        )
    finally:
        assert node.stop() == 0
    line = _rejected_start(StorageNode(copy))
    assert "missing committed blocks" in line, line
    assert "no -wal file" in line, line
    assert f"block {height} was committed" in line, line


def test_leftover_tip_without_database_rejected(
    stopped_node: Path, tmp_path: Path
) -> None:
    node = _copy(stopped_node, tmp_path)
    node.db_path.unlink()
    line = _rejected_start(node)
    assert "is missing but files of it remain" in line
    assert "weall.db.tip" in line
    assert not node.db_path.exists()


def test_undamaged_copy_starts(stopped_node: Path, tmp_path: Path) -> None:
    node = _copy(stopped_node, tmp_path)
    started = time.monotonic()
    node.start()
    try:
        node.wait_ready()
    finally:
        assert node.stop() == 0
    assert time.monotonic() - started < 60
