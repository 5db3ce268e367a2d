"""``weall verify`` on a real database: a clean chain passes, a tampered one fails."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from weall import config as config_module
from weall.bootstrap import prepare_node
from weall.protocol import keys
from weall.protocol.block import block_hash, block_signing_bytes, build_block
from weall.protocol.envelope import build_envelope, parse_envelope
from weall.protocol.genesis import genesis_info
from weall.storage.writer import Writer

BLOCKS = 6


def _build_chain(workdir: Path, *, unsigned_at: int | None = None) -> Path:
    """Write a chain of ``BLOCKS`` blocks of three posts each and return its database.

    With ``unsigned_at``, the first post of that block is an envelope without
    ``sig``, as a dev node with ``WEALL_ALLOW_UNSIGNED_TXS=1`` would take it.
    """
    config = config_module.load({"WEALL_DB_PATH": str(workdir / "data" / "weall.db")})
    prepare_node(config, ["producer"])
    founder = keys.load_key_file(config.keys_dir / "founder.key")
    node = keys.load_key_file(config.node_key_path)
    writer = Writer(config.db_path, synchronous="NORMAL")
    document = orjson.loads(writer.meta()["genesis_json"])
    info = genesis_info(document)
    nonce = 1
    for height in range(1, BLOCKS + 1):
        envs = []
        for index in range(3):
            document = build_envelope(
                founder,
                chain_id=info.chain_id,
                tx_type="CONTENT_POST_CREATE",
                signer="@founder",
                nonce=nonce,
                payload={"body": f"post {nonce}"},
            )
            unsigned = height == unsigned_at and index == 0
            if unsigned:
                del document["sig"]
            envs.append(parse_envelope(document, allow_unsigned=unsigned))
            nonce += 1
        writer.store_pending([(env, int(time.time() * 1000)) for env in envs])
        head = writer.head()
        block = build_block(
            writer.state,
            head["header"],
            envs,
            timestamp_ms=head["header"]["timestamp_ms"] + 1000,
            genesis=info,
            producer_pubkey=node.pubkey,
            sign=node.sign,
        )
        assert block.height == height
        writer.commit_block(block)
    writer.close()
    return config.db_path


def _verify(
    db_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weall", "verify", "--db", str(db_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_verify_clean_chain_passes(tmp_path: Path) -> None:
    db_path = _build_chain(tmp_path)
    result = _verify(db_path)
    assert result.returncode == 0, result.stderr
    assert f"{BLOCKS + 1} blocks" in result.stdout
    assert f"{BLOCKS * 3} transactions" in result.stdout


def _tamper_envelope(conn: sqlite3.Connection, height: int) -> None:
    tx_id, envelope = conn.execute(
        "SELECT tx_id, envelope FROM txs WHERE height = ? ORDER BY idx LIMIT 1",
        (height,),
    ).fetchone()
    document = orjson.loads(envelope)
    document["payload"]["body"] = "rewritten history"
    conn.execute(
        "UPDATE txs SET envelope = ? WHERE tx_id = ?", (orjson.dumps(document), tx_id)
    )


def _tamper_header(conn: sqlite3.Connection, height: int) -> None:
    header = orjson.loads(
        conn.execute(
            "SELECT header FROM blocks WHERE height = ?", (height,)
        ).fetchone()[0]
    )
    header["timestamp_ms"] += 1
    conn.execute(
        "UPDATE blocks SET header = ? WHERE height = ?", (orjson.dumps(header), height)
    )


def _tamper_state_root(conn: sqlite3.Connection, height: int) -> None:
    header = orjson.loads(
        conn.execute(
            "SELECT header FROM blocks WHERE height = ?", (height,)
        ).fetchone()[0]
    )
    header["state_root"] = "b" + "a" * 52
    conn.execute(
        "UPDATE blocks SET header = ? WHERE height = ?", (orjson.dumps(header), height)
    )


def _tamper_receipt(conn: sqlite3.Connection, height: int) -> None:
    conn.execute(
        "UPDATE txs SET receipt = ? WHERE height = ? AND idx = 0",
        (orjson.dumps({"ok": False, "code": "forged"}), height),
    )


def _tamper_tx_signer(conn: sqlite3.Connection, height: int) -> None:
    conn.execute(
        "UPDATE txs SET signer = '@mallory' WHERE height = ? AND idx = 0", (height,)
    )


def _tamper_tx_nonce(conn: sqlite3.Connection, height: int) -> None:
    conn.execute(
        "UPDATE txs SET nonce = nonce + 100 WHERE height = ? AND idx = 0", (height,)
    )


def _tamper_tx_type(conn: sqlite3.Connection, height: int) -> None:
    conn.execute(
        "UPDATE txs SET tx_type = 'BALANCE_TRANSFER' WHERE height = ? AND idx = 0",
        (height,),
    )


def _tamper_block_timestamp(conn: sqlite3.Connection, height: int) -> None:
    conn.execute(
        "UPDATE blocks SET timestamp_ms = timestamp_ms + 1 WHERE height = ?", (height,)
    )


def _tamper_block_tx_count(conn: sqlite3.Connection, height: int) -> None:
    conn.execute("UPDATE blocks SET tx_count = 99 WHERE height = ?", (height,))


@pytest.mark.parametrize(
    "tamper",
    [
        _tamper_envelope,
        _tamper_header,
        _tamper_state_root,
        _tamper_receipt,
        _tamper_tx_signer,
        _tamper_tx_nonce,
        _tamper_tx_type,
        _tamper_block_timestamp,
        _tamper_block_tx_count,
    ],
    ids=[
        "envelope",
        "header",
        "state_root",
        "receipt",
        "tx_signer",
        "tx_nonce",
        "tx_type",
        "block_timestamp",
        "block_tx_count",
    ],
)
def test_verify_names_tampered_height(tmp_path: Path, tamper) -> None:  # type: ignore[no-untyped-def]
    db_path = _build_chain(tmp_path)
    conn = sqlite3.connect(db_path)
    tamper(conn, 4)
    conn.commit()
    conn.close()
    result = _verify(db_path)
    assert result.returncode == 1
    assert "height 4" in result.stderr


@pytest.mark.parametrize("name", ["chain_id", "genesis_hash"])
def test_verify_rejects_tampered_meta(tmp_path: Path, name: str) -> None:
    db_path = _build_chain(tmp_path)
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE meta SET value = 'weall-other' WHERE key = ?", (name,))
    conn.commit()
    conn.close()
    result = _verify(db_path)
    assert result.returncode == 1
    assert f"FAILED at height 0: block 0: meta {name} 'weall-other'" in result.stderr


# -- headers re-hashed, with or without a new signature ---------------------------


def _rewrite_header(
    db_path: Path, height: int, change: dict[str, Any], *, resign: bool
) -> None:
    """Change header fields of a stored block and store its new hash.

    With ``resign`` the node key signs the new header, as a producer whose
    key leaked could; without it the old signature stays.
    """
    node = keys.load_key_file(db_path.parent / "keys" / "node.key")
    conn = sqlite3.connect(db_path)
    try:
        header = orjson.loads(
            conn.execute(
                "SELECT header FROM blocks WHERE height = ?", (height,)
            ).fetchone()[0]
        )
        header.update(change)
        values: dict[str, Any] = {
            "header": orjson.dumps(header),
            "hash": block_hash(header),
            "timestamp_ms": header["timestamp_ms"],
        }
        if resign:
            values["sig"] = node.sign(block_signing_bytes(header))
        assignments = ", ".join(f"{name} = ?" for name in values)
        conn.execute(
            f"UPDATE blocks SET {assignments} WHERE height = ?",
            (*values.values(), height),
        )
        conn.commit()
    finally:
        conn.close()


def _stored_header(db_path: Path, height: int) -> dict[str, Any]:
    conn = sqlite3.connect(db_path)
    try:
        raw = conn.execute(
            "SELECT header FROM blocks WHERE height = ?", (height,)
        ).fetchone()[0]
    finally:
        conn.close()
    header: dict[str, Any] = orjson.loads(raw)
    return header


def _assert_fails_at(
    result: subprocess.CompletedProcess[str], height: int, reason: str
) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAILED at height {height}: block {height}: {reason}" in result.stderr, (
        result.stderr
    )
    assert "Traceback" not in result.stderr, result.stderr


def test_verify_replay_catches_resigned_state_root(tmp_path: Path) -> None:
    db_path = _build_chain(tmp_path)
    _rewrite_header(db_path, 4, {"state_root": "b" + "a" * 52}, resign=True)
    _assert_fails_at(_verify(db_path), 4, "state root does not match a replay")


def test_verify_replay_catches_resigned_chain_id(tmp_path: Path) -> None:
    db_path = _build_chain(tmp_path)
    _rewrite_header(db_path, 4, {"chain_id": "weall-forged"}, resign=True)
    _assert_fails_at(_verify(db_path), 4, "header chain_id does not match a replay")


def test_verify_signature_catches_rehashed_header(tmp_path: Path) -> None:
    db_path = _build_chain(tmp_path)
    _rewrite_header(db_path, 4, {"state_root": "b" + "a" * 52}, resign=False)
    _assert_fails_at(_verify(db_path), 4, "producer signature does not verify")


@pytest.mark.parametrize("offset", [0, -1], ids=["equal", "earlier"])
def test_verify_rejects_non_increasing_timestamp(tmp_path: Path, offset: int) -> None:
    db_path = _build_chain(tmp_path)
    previous = _stored_header(db_path, 3)["timestamp_ms"]
    _rewrite_header(db_path, 4, {"timestamp_ms": previous + offset}, resign=True)
    _assert_fails_at(
        _verify(db_path),
        4,
        f"timestamp_ms {previous + offset} does not exceed the previous block's "
        f"{previous}",
    )


@pytest.mark.parametrize(
    "change",
    [{"timestamp_ms": "soon"}, {"height": None}, {"tx_ids": "none"}],
    ids=["timestamp-text", "height-null", "tx-ids-text"],
)
def test_verify_reports_malformed_header(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    db_path = _build_chain(tmp_path)
    conn = sqlite3.connect(db_path)
    header = orjson.loads(
        conn.execute("SELECT header FROM blocks WHERE height = 4").fetchone()[0]
    )
    header.update(change)
    conn.execute(
        "UPDATE blocks SET header = ? WHERE height = 4", (orjson.dumps(header),)
    )
    conn.commit()
    conn.close()
    result = _verify(db_path)
    assert result.returncode == 1
    assert "FAILED at height 4: block 4: header " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_verify_rejects_tampered_genesis_block(tmp_path: Path) -> None:
    db_path = _build_chain(tmp_path)
    genesis_time = _stored_header(db_path, 0)["timestamp_ms"]
    _rewrite_header(db_path, 0, {"timestamp_ms": genesis_time + 1}, resign=True)
    _assert_fails_at(_verify(db_path), 0, "block 0 does not commit the genesis")


# -- unsigned transactions --------------------------------------------------------


def test_verify_rejects_unsigned_transaction(tmp_path: Path) -> None:
    db_path = _build_chain(tmp_path, unsigned_at=2)
    # WEALL_MODE defaults to dev; genesis mode refuses WEALL_ALLOW_UNSIGNED_TXS=1
    # before anything is read.
    for env in ({}, {"WEALL_MODE": "dev"}, {"WEALL_ALLOW_UNSIGNED_TXS": "0"}):
        result = _verify(db_path, env)
        assert result.returncode == 1, (env, result.stdout)
        assert "FAILED at height 2: block 2: transaction " in result.stderr, env
        assert "missing fields: sig" in result.stderr, (env, result.stderr)


def test_verify_accepts_unsigned_on_dev_chain(tmp_path: Path) -> None:
    db_path = _build_chain(tmp_path, unsigned_at=2)
    result = _verify(db_path, {"WEALL_MODE": "dev", "WEALL_ALLOW_UNSIGNED_TXS": "1"})
    assert result.returncode == 0, result.stderr
    assert f"{BLOCKS * 3} transactions" in result.stdout
