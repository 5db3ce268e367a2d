"""Schema versions at node start: an old database is migrated, a newer one rejected."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from weall.bootstrap import dev_genesis
from weall.protocol import keys
from weall.protocol.block import build_block, genesis_block
from weall.protocol.envelope import parse_envelope
from weall.protocol.genesis import genesis_info, genesis_state
from weall.protocol.state import MemoryState
from weall.storage.db import write_tip
from weall.storage.lock import ProducerLock
from weall.storage.schema import SCHEMA_VERSION

from ._support import CHAIN_ID, Poster, StorageNode, env_without_weall

pytestmark = pytest.mark.slow


def _make_v1_database(data: Path, *, blocks: int) -> dict[str, Any]:
    """A data directory whose database has schema version 1 and a few blocks of posts."""
    from weall.storage.writer import Writer  # the producer's module, used as it does

    node, founder = keys.generate("@node"), keys.generate("@founder")
    keys.write_key_file(data / "keys" / "node.key", node)
    keys.write_key_file(data / "keys" / "founder.key", founder)
    document = dev_genesis(node, founder, chain_id=CHAIN_ID)
    document["genesis_time_ms"] = int(time.time() * 1000) - 3_600_000
    (data / "genesis.json").write_text(json.dumps(document), encoding="utf-8")
    db_path = data / "weall.db"
    # The chain is written with the current writer, then taken back to the
    # version 1 layout. After the recent state is folded into the state table,
    # dropping the objects of migrations 2 and 3 and rebuilding txs keyed by
    # tx_id (as migration 4 found it) leaves what a version 1 node wrote.
    writer = Writer(db_path, synchronous="NORMAL")
    writer.migrate()
    block0 = genesis_block(document, genesis_state(document, MemoryState()), node)
    writer.initialize(document, block0)
    first_nonce = int(writer.state.get("account", "@founder")["next_nonce"])
    info, poster, head = (
        genesis_info(document),
        Poster(founder, first_nonce),
        block0.header,
    )
    for number in range(1, blocks + 1):
        envelopes = [parse_envelope(doc) for doc in poster.envelopes(3)]
        poster.next_nonce += 3
        timestamp = document["genesis_time_ms"] + number * 1000
        writer.store_pending([(env, timestamp) for env in envelopes])
        block = build_block(
            writer.state,
            head,
            envelopes,
            timestamp_ms=timestamp,
            genesis=info,
            producer_pubkey=node.pubkey,
            sign=node.sign,
        )
        assert all(receipt["ok"] for receipt in block.receipts), block.receipts
        writer.commit_block(block)
        head = block.header
    while writer.fold_recent():
        pass
    for statement in (
        "BEGIN IMMEDIATE",
        "DROP VIEW state_view",
        "DROP TABLE state_recent",
        "DROP INDEX txs_pending",
        "DROP INDEX txs_block",
        "CREATE TABLE txs_v1 (tx_id TEXT PRIMARY KEY, signer TEXT NOT NULL,"
        " nonce INTEGER NOT NULL, tx_type TEXT NOT NULL, status TEXT NOT NULL,"
        " envelope BLOB NOT NULL, received_ms INTEGER NOT NULL, height INTEGER,"
        " idx INTEGER, receipt BLOB) WITHOUT ROWID",
        "INSERT INTO txs_v1 SELECT tx_id, signer, nonce, tx_type, status, envelope,"
        " received_ms, height, idx, receipt FROM txs",
        "DROP TABLE txs",
        "ALTER TABLE txs_v1 RENAME TO txs",
        "DELETE FROM schema_migrations WHERE version > 1",
        "PRAGMA user_version = 1",
        "COMMIT",
    ):
        writer.conn.execute(statement)
    writer.checkpoint("TRUNCATE")
    writer.close()
    write_tip(db_path, blocks, _hash_at(db_path, blocks))
    return {"height": blocks, "posts": 3 * blocks}


def _hash_at(db_path: Path, height: int) -> str:
    conn = sqlite3.connect(db_path)
    try:
        return str(
            conn.execute(
                "SELECT hash FROM blocks WHERE height = ?", (height,)
            ).fetchone()[0]
        )
    finally:
        conn.close()


def _schema(db_path: Path) -> tuple[int, list[tuple[int, str, int]], list[str]]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        applied = conn.execute(
            "SELECT version, name, applied_ms FROM schema_migrations ORDER BY version"
        ).fetchall()
        indexes = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'txs_%'"
                " ORDER BY name"
            )
        ]
        return version, applied, indexes
    finally:
        conn.close()


def test_v1_database_migrated_at_start(tmp_path: Path) -> None:
    built = _make_v1_database(tmp_path / "data", blocks=4)
    db_path = tmp_path / "data" / "weall.db"
    version, applied, indexes = _schema(db_path)
    assert (version, [row[0] for row in applied], indexes) == (1, [1], [])

    # With another process holding the producer lock, the producer rejects
    # before it migrates anything.
    held = ProducerLock(db_path.with_name("weall.db.lock"))
    held.acquire()
    try:
        env = {
            **env_without_weall(),
            "WEALL_DB_PATH": str(db_path),
            "WEALL_RUN_DIR": str(Path("/tmp") / f"weall-mig-{os.getpid()}"),
        }
        rejected = subprocess.run(
            [sys.executable, "-m", "weall", "actor", "producer"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        held.release()
    assert rejected.returncode == 78, rejected.stderr
    assert "holds" in rejected.stderr
    assert _schema(db_path)[0] == 1

    started_ms = int(time.time() * 1000)
    node = StorageNode(tmp_path)
    node.start()
    try:
        node.wait_ready()
        assert node.head()["height"] >= built["height"]
        feed = node.get("/v1/feed?limit=100").json()["items"]
        assert len(feed) == built["posts"]
    finally:
        assert node.stop() == 0
    version, applied, indexes = _schema(db_path)
    assert version == SCHEMA_VERSION
    assert [row[0] for row in applied] == list(range(1, SCHEMA_VERSION + 1))
    assert all(started_ms <= row[2] <= int(time.time() * 1000) for row in applied[1:])
    assert indexes == ["txs_block", "txs_pending"]
    migrated = [line for line in node.log().splitlines() if "migration applied" in line]
    assert [line.split(" | ")[0].strip() for line in migrated] == ["producer"] * (
        SCHEMA_VERSION - 1
    )
    verify = node.cli("verify")
    assert verify.returncode == 0, verify.stderr


def test_newer_schema_rejected_at_start(tmp_path: Path) -> None:
    node = StorageNode(tmp_path)
    node.start()
    node.wait_ready()
    assert node.stop() == 0
    db_path = tmp_path / "data" / "weall.db"
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = db_path.read_bytes()

    node = StorageNode(tmp_path)
    node.start()
    assert node.process is not None
    code = node.process.wait(60)
    assert code != 0
    lines = [line for line in node.log().splitlines() if "schema version" in line]
    assert len(lines) == 1, node.log()
    assert lines[0].startswith("weall supervise: ")
    assert f"schema version {SCHEMA_VERSION + 1}" in lines[0]
    assert "restore a backup" in lines[0]
    assert "Traceback" not in node.log()
    assert db_path.read_bytes() == before

    # The producer alone rejects it too, before it writes anything.
    env = {
        **env_without_weall(),
        "WEALL_DB_PATH": str(db_path),
        "WEALL_RUN_DIR": str(Path("/tmp") / f"weall-new-{os.getpid()}"),
    }
    alone = subprocess.run(
        [sys.executable, "-m", "weall", "actor", "producer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert alone.returncode == 78
    assert f"schema version {SCHEMA_VERSION + 1}" in alone.stderr
    assert db_path.read_bytes() == before
