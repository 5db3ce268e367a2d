"""``weall backup --verify`` and ``weall restore`` on a real node."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from weall.protocol.envelope import build_envelope

from ._support import POST, StorageNode, wait_for

pytestmark = pytest.mark.slow


def _post(node: StorageNode, body: str) -> str:
    envelope = build_envelope(
        node.founder(),
        chain_id="weall-dev",
        tx_type=POST,
        signer="@founder",
        nonce=node.next_nonce(),
        payload={"body": body},
    )
    response = node.post("/v1/tx/submit", json=envelope)
    assert response.status_code == 202, response.text
    tx_id: str = response.json()["tx_id"]
    wait_for(
        lambda: node.get(f"/v1/tx/{tx_id}").json().get("status") == "committed",
        timeout=30,
        what=f"{body!r} to commit",
    )
    return tx_id


def test_restore_round_trip(tmp_path: Path) -> None:
    node = StorageNode(tmp_path, env={"WEALL_BLOCK_INTERVAL_MS": "200"})
    node.start()
    node.wait_ready()
    try:
        kept = [_post(node, f"before the backup {n}") for n in range(3)]
        manifest = node.cli_json("backup")
        backup = node.workdir / manifest["path"]
        lost = [_post(node, f"after the backup {n}") for n in range(2)]
        head_before = node.head()

        rejected = node.cli("restore", str(backup))
        assert rejected.returncode == 1
        assert "stop the node before restoring" in rejected.stderr.splitlines()[-1]
        assert "Traceback" not in rejected.stderr
        assert node.head() == head_before
        assert not list(node.data.glob("weall.db.before-restore-*"))

        verified = node.cli_json("backup", "--verify", str(backup))
        assert verified["height"] == manifest["height"]
        assert verified["tip_hash"] == manifest["tip_hash"]
        assert verified["manifest"] == "matched"
    finally:
        assert node.stop() == 0

    restored = node.cli_json("restore", str(backup))
    assert restored["height"] == manifest["height"]
    preserved = list(node.data.glob("weall.db.before-restore-*"))
    assert [p.name for p in preserved if not p.name.endswith(("-wal", "-shm"))], (
        preserved
    )

    node.start()
    node.wait_ready()
    try:
        head = node.head()
        assert head["height"] == manifest["height"]
        assert head["hash"] == manifest["tip_hash"]
        for tx_id in kept:
            assert node.get(f"/v1/tx/{tx_id}").json()["status"] == "committed"
        for tx_id in lost:
            assert node.get(f"/v1/tx/{tx_id}").status_code == 404
        # The chain goes on from the backup's tip.
        _post(node, "after the restore")
        assert node.head()["height"] > manifest["height"]
    finally:
        assert node.stop() == 0
    verify = node.cli("verify")
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith("ok:")


def test_verify_and_restore_reject_damaged_backup(tmp_path: Path) -> None:
    node = StorageNode(tmp_path)
    node.start()
    node.wait_ready()
    try:
        _post(node, "something to back up")
        manifest = node.cli_json("backup")
    finally:
        assert node.stop() == 0
    backup = node.workdir / manifest["path"]
    damaged = tmp_path / "damaged" / backup.name
    damaged.parent.mkdir()
    shutil.copy(backup, damaged)
    shutil.copy(backup.with_suffix(".json"), damaged.with_suffix(".json"))
    with damaged.open("r+b") as handle:
        # Page 2's b-tree header: an invalid page type and cell count.
        handle.seek(4096)
        handle.write(b"\xff" * 12)

    result = node.cli("backup", "--verify", str(damaged))
    assert result.returncode == 1
    assert "SHA-256" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr

    # Without its manifest, the integrity check is what finds the damage.
    damaged.with_suffix(".json").unlink()
    result = node.cli("backup", "--verify", str(damaged))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert "integrity check" in last or "damaged" in last, result.stderr

    before = (node.data / "weall.db").read_bytes()
    result = node.cli("restore", str(damaged))
    assert result.returncode == 1
    assert (node.data / "weall.db").read_bytes() == before
    assert not list(node.data.glob("weall.db.before-restore-*"))
    conn = sqlite3.connect(node.data / "weall.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_restore_checks_lock_before_verifying(tmp_path: Path) -> None:
    """A running node is rejected before the backup is read at all."""
    node = StorageNode(tmp_path)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database " * 4096)
    node.start()
    node.wait_ready()
    try:
        while_running = node.cli("restore", str(garbage))
    finally:
        assert node.stop() == 0
    assert while_running.returncode == 1
    assert "stop the node before restoring" in while_running.stderr.splitlines()[-1]

    # With the node stopped, the same file fails its verification.
    while_stopped = node.cli("restore", str(garbage))
    assert while_stopped.returncode == 1
    last = while_stopped.stderr.splitlines()[-1]
    assert "stop the node" not in last
    assert "no SQLite header" in last, while_stopped.stderr
    assert "Traceback" not in while_stopped.stderr
    assert not list(node.data.glob("weall.db.before-restore-*"))
