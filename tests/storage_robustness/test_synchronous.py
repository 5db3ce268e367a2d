"""``synchronous=FULL`` in genesis mode, ``NORMAL`` in dev, as ``/health`` reports."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from weall.storage.db import open_readwrite

from ._support import StorageNode

# PRAGMA synchronous reads back 1 for NORMAL and 2 for FULL.
LEVELS = {"NORMAL": 1, "FULL": 2}


@pytest.mark.parametrize("level", ["NORMAL", "FULL"], ids=["normal", "full"])
def test_open_readwrite_applies_synchronous(tmp_path: Path, level: str) -> None:
    conn = open_readwrite(tmp_path / "weall.db", synchronous=level)
    try:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == LEVELS[level]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_open_readwrite_rejects_other_levels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FULL or NORMAL"):
        open_readwrite(tmp_path / "weall.db", synchronous="OFF")
    assert not (tmp_path / "weall.db").exists()


def _producer_line(node: StorageNode) -> str:
    lines = [line for line in node.log().splitlines() if "producer ready" in line]
    assert len(lines) == 1, node.log()
    return lines[0]


@pytest.mark.slow
def test_dev_mode_reports_normal(tmp_path: Path) -> None:
    node = StorageNode(tmp_path)
    node.start()
    try:
        node.wait_ready()
        health = node.get("/health").json()
        assert health["mode"] == "dev"
        assert health["storage"]["synchronous"] == "NORMAL"
        assert health["storage"]["journal_mode"] == "wal"
        assert "synchronous=NORMAL" in _producer_line(node)
    finally:
        assert node.stop() == 0


@pytest.mark.slow
def test_genesis_mode_reports_full(tmp_path: Path) -> None:
    helper = StorageNode(tmp_path)
    keys_dir = tmp_path / "keys"
    node_key = keys_dir / "node.key"
    pubkey = helper.cli(
        "keygen", "--out", str(node_key), "--account", "@node", check=True
    )
    founder = helper.cli(
        "keygen",
        "--out",
        str(keys_dir / "founder.key"),
        "--account",
        "@founder",
        check=True,
    ).stdout.strip()
    assert os.stat(node_key).st_mode & 0o777 == 0o600
    assert pubkey.stdout.strip()
    genesis = tmp_path / "genesis.json"
    helper.cli(
        "genesis",
        "new",
        "--chain-id",
        "weall-test",
        "--producer-key",
        str(node_key),
        "--account",
        f"@founder:{founder}:2:juror:1000",
        "--out",
        str(genesis),
        check=True,
    )

    node = StorageNode(
        tmp_path,
        env={
            "WEALL_MODE": "genesis",
            "WEALL_CHAIN_ID": "weall-test",
            "WEALL_GENESIS_PATH": str(genesis),
            "WEALL_NODE_KEY_PATH": str(node_key),
        },
    )
    node.start()
    try:
        node.wait_ready()
        health = node.get("/health").json()
        assert health["mode"] == "genesis"
        assert health["chain_id"] == "weall-test"
        assert health["storage"]["synchronous"] == "FULL"
        assert "synchronous=FULL" in _producer_line(node)
    finally:
        assert node.stop() == 0
    conn = sqlite3.connect(f"file:{tmp_path / 'data' / 'weall.db'}?mode=ro", uri=True)
    try:
        assert (
            conn.execute("SELECT value FROM meta WHERE key = 'chain_id'").fetchone()[0]
            == "weall-test"
        )
    finally:
        conn.close()
