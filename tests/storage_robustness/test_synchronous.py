"""``synchronous=FULL`` in genesis mode, ``NORMAL`` in dev, as ``/health`` reports.

``/health`` shows the settings that the producer read back from its own
connection. Only when the producer does not reply does it show the api's
configuration, with ``source: "config"``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from weall.storage.db import open_readwrite

from ._support import StorageNode, wait_for

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
        assert health["storage"]["source"] == "producer"
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
    # An api of its own, as in a deployment with one container for the api:
    # its configuration (dev mode) requests NORMAL.
    api = StorageNode(
        tmp_path / "api",
        env={
            "WEALL_MODE": "dev",
            "WEALL_CHAIN_ID": "weall-test",
            "WEALL_DB_PATH": str(node.db_path),
            "WEALL_GENESIS_PATH": str(genesis),
            "WEALL_NODE_KEY_PATH": str(node_key),
            "WEALL_RUN_DIR": str(node.run_dir),
            "WEALL_CONTROL_SOCKET": str(tmp_path / "api" / "supervisor.sock"),
        },
        args=["--actors", "api"],
    )
    api.workdir.mkdir()
    try:
        node.wait_ready()
        health = node.get("/health").json()
        assert health["mode"] == "genesis"
        assert health["chain_id"] == "weall-test"
        assert health["storage"]["synchronous"] == "FULL"
        assert health["storage"]["source"] == "producer"
        assert "synchronous=FULL" in _producer_line(node)

        api.start()
        api.wait_ready()
        split = api.get("/health").json()
        assert split["mode"] == "dev"
        assert split["storage"]["synchronous"] == "FULL"
        assert split["storage"]["journal_mode"] == "wal"
        assert split["storage"]["source"] == "producer"
    finally:
        assert node.stop() == 0

    try:
        # Without a producer, the api shows its own configuration, marked so.
        fallback = wait_for(
            lambda: (
                (doc := api.get("/health").json())["storage"]["source"] == "config"
                and doc
            ),
            timeout=30,
            what="/health without a producer",
        )
        assert fallback["storage"]["synchronous"] == "NORMAL"
    finally:
        assert api.stop() == 0
    conn = sqlite3.connect(f"file:{tmp_path / 'data' / 'weall.db'}?mode=ro", uri=True)
    try:
        assert (
            conn.execute("SELECT value FROM meta WHERE key = 'chain_id'").fetchone()[0]
            == "weall-test"
        )
    finally:
        conn.close()
