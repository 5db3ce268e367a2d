"""``weall verify`` on a real database: a clean chain passes, a tampered one fails."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from weall import config as config_module
from weall.bootstrap import prepare_node
from weall.protocol import keys
from weall.protocol.block import build_block
from weall.protocol.envelope import build_envelope, parse_envelope
from weall.protocol.genesis import genesis_info
from weall.storage.writer import Writer

BLOCKS = 6


def _build_chain(workdir: Path) -> Path:
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
        for _ in range(3):
            env = parse_envelope(
                build_envelope(
                    founder,
                    chain_id=info.chain_id,
                    tx_type="CONTENT_POST_CREATE",
                    signer="@founder",
                    nonce=nonce,
                    payload={"body": f"post {nonce}"},
                )
            )
            envs.append(env)
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


def _verify(db_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weall", "verify", "--db", str(db_path)],
        capture_output=True,
        text=True,
        timeout=120,
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


@pytest.mark.parametrize(
    "tamper",
    [_tamper_envelope, _tamper_header, _tamper_state_root, _tamper_receipt],
    ids=["envelope", "header", "state_root", "receipt"],
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
