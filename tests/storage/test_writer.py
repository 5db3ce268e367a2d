"""The producer's writer: genesis, pending transactions, blocks, expiry, checkpoints."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from helpers import Chain

from weall.errors import StartupError, StorageError, StorageFullError
from weall.protocol import canonical
from weall.protocol.block import BlockResult, build_block
from weall.protocol.envelope import parse_envelope
from weall.storage import queries
from weall.storage.reader import read_once
from weall.storage.schema import SCHEMA_VERSION
from weall.storage.writer import Writer

CommitBlock = Callable[..., BlockResult]

# Stores one pending transaction, then exits without closing the database,
# as a producer killed right after its acknowledgement would.
CRASH_AFTER_STORE = """
import os, sys
from pathlib import Path
import orjson
import weall.protocol
from weall.protocol.envelope import parse_envelope
from weall.storage.writer import Writer
writer = Writer(Path(sys.argv[1]), synchronous=sys.argv[2])
writer.store_pending([(parse_envelope(orjson.loads(sys.argv[3])), 123)])
os._exit(0)
"""


def table(writer: Writer, name: str) -> list[tuple]:
    return writer.conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall()


def snapshot(writer: Writer) -> dict[str, list[tuple]]:
    return {
        name: table(writer, name)
        for name in ("meta", "state", "state_recent", "blocks", "txs")
    }


def all_state(conn: sqlite3.Connection) -> dict[tuple[str, str], dict]:
    rows = conn.execute("SELECT kind, key, value FROM state_view").fetchall()
    return {(kind, key): orjson.loads(value) for kind, key, value in rows}


# -- initialize ------------------------------------------------------------------------------


def test_initialize_stores_meta(writer: Writer, chain: Chain) -> None:
    meta = writer.meta()
    assert meta["chain_id"] == "weall-dev"
    assert meta["genesis_hash"] == chain.info.genesis_hash
    assert meta["genesis_json"] == canonical.dumps(chain.document).decode()


def test_initialize_stores_block_0(writer: Writer, chain: Chain) -> None:
    head = writer.head()
    assert head["height"] == 0
    assert head["hash"] == chain.genesis.hash
    assert head["header"] == chain.genesis.header
    assert head["sig"] == chain.genesis.sig


def test_initialize_stores_genesis_state(writer: Writer, chain: Chain) -> None:
    assert all_state(writer.conn) == chain.state.entries


def test_initialize_stores_canonical_header(writer: Writer, chain: Chain) -> None:
    (header,) = writer.conn.execute(
        "SELECT header FROM blocks WHERE height = 0"
    ).fetchone()
    assert header == canonical.dumps(chain.genesis.header)


def test_initialize_twice_rejected(writer: Writer, chain: Chain) -> None:
    before = snapshot(writer)
    with pytest.raises(StartupError, match="already holds a chain"):
        writer.initialize(chain.document, chain.genesis)
    assert snapshot(writer) == before


def test_initialize_needs_migration(db_path: Path, chain: Chain) -> None:
    writer = Writer(db_path, synchronous="NORMAL")
    try:
        with pytest.raises(StorageError, match="migrate the schema first"):
            writer.initialize(chain.document, chain.genesis)
    finally:
        writer.close()


def test_writer_schema_version(writer: Writer) -> None:
    assert writer.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_head_of_empty_database(db_path: Path) -> None:
    writer = Writer(db_path, synchronous="NORMAL")
    try:
        writer.migrate()
        with pytest.raises(StorageError, match="has no blocks"):
            writer.head()
    finally:
        writer.close()


# -- store_pending -------------------------------------------------------------------------------


def test_store_pending_status(writer: Writer, chain: Chain) -> None:
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    writer.store_pending([(env, 1234)])
    row = writer.tx_status(env.tx_id)
    assert row["status"] == "pending"
    assert row["received_ms"] == 1234
    assert row["signer"] == "@alice"
    assert row["nonce"] == 1
    assert "height" not in row
    assert "receipt" not in row


def test_store_pending_keeps_envelope(writer: Writer, chain: Chain) -> None:
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "é"})
    writer.store_pending([(env, 1)])
    stored = writer.tx_status(env.tx_id)["envelope"]
    assert parse_envelope(stored).tx_id == env.tx_id


def test_store_pending_listed(writer: Writer, chain: Chain) -> None:
    late = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    early = chain.tx("@bob", "PROFILE_UPDATE", {"bio": "y"})
    writer.store_pending([(late, 20), (early, 10)])
    assert [tx_id for tx_id, _, _ in writer.pending()] == [early.tx_id, late.tx_id]


def test_store_pending_batch_is_atomic(writer: Writer, chain: Chain) -> None:
    first = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    writer.store_pending([(first, 1)])
    second = chain.tx("@bob", "PROFILE_UPDATE", {"bio": "y"})
    with pytest.raises(StorageError, match="store pending"):
        writer.store_pending([(second, 2), (first, 3)])
    assert writer.tx_status(second.tx_id) is None
    assert writer.tx_status(first.tx_id)["received_ms"] == 1


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_store_pending_survives_crash(
    tmp_path: Path, chain: Chain, synchronous: str
) -> None:
    path = tmp_path / "weall.db"
    setup = Writer(path, synchronous=synchronous)
    setup.migrate()
    setup.initialize(chain.document, chain.genesis)
    setup.close()
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "durable"})
    document = orjson.dumps(env.to_json()).decode()
    result = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_STORE, str(path), synchronous, document],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    row = read_once(path, lambda conn: queries.tx_row(conn, env.tx_id))
    assert row["status"] == "pending"


def test_store_pending_visible_to_reader(
    writer: Writer, chain: Chain, db_path: Path
) -> None:
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    writer.store_pending([(env, 5)])
    rows = read_once(db_path, queries.pending_rows)
    assert [tx_id for tx_id, _, _ in rows] == [env.tx_id]


def test_store_pending_disk_full(writer: Writer, chain: Chain) -> None:
    pages = writer.conn.execute("PRAGMA page_count").fetchone()[0]
    writer.conn.execute(f"PRAGMA max_page_count = {pages}")
    env = chain.tx("@alice", "CONTENT_POST_CREATE", {"body": "x" * 60_000})
    with pytest.raises(StorageFullError, match="disk full"):
        writer.store_pending([(env, 1)])
    assert writer.tx_status(env.tx_id) is None


def test_store_pending_after_space_freed(writer: Writer, chain: Chain) -> None:
    pages = writer.conn.execute("PRAGMA page_count").fetchone()[0]
    writer.conn.execute(f"PRAGMA max_page_count = {pages}")
    env = chain.tx("@alice", "CONTENT_POST_CREATE", {"body": "x" * 60_000})
    with pytest.raises(StorageFullError):
        writer.store_pending([(env, 1)])
    writer.conn.execute("PRAGMA max_page_count = 1073741823")
    writer.store_pending([(env, 1)])
    assert writer.tx_status(env.tx_id)["status"] == "pending"


# -- commit_block ------------------------------------------------------------------------------


def test_commit_block_statuses(
    writer: Writer, chain: Chain, commit: CommitBlock
) -> None:
    good = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    bad = chain.tx("@bob", "PROFILE_UPDATE", {})
    commit(good, bad)
    assert writer.tx_status(good.tx_id)["status"] == "committed"
    assert writer.tx_status(bad.tx_id)["status"] == "rejected"


def test_commit_block_receipts(
    writer: Writer, chain: Chain, commit: CommitBlock
) -> None:
    good = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    bad = chain.tx("@bob", "PROFILE_UPDATE", {})
    result = commit(good, bad)
    assert writer.tx_status(good.tx_id)["receipt"] == result.receipts[0]
    assert writer.tx_status(bad.tx_id)["receipt"] == result.receipts[1]


def test_commit_block_places(writer: Writer, chain: Chain, commit: CommitBlock) -> None:
    first = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    second = chain.tx("@bob", "PROFILE_UPDATE", {"bio": "y"})
    commit(first, second)
    placed = writer.conn.execute(
        "SELECT tx_id, height, idx FROM txs ORDER BY idx"
    ).fetchall()
    assert placed == [(first.tx_id, 1, 0), (second.tx_id, 1, 1)]


def test_commit_block_row(writer: Writer, chain: Chain, commit: CommitBlock) -> None:
    result = commit(chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"}))
    row = writer.conn.execute(
        "SELECT height, hash, header, sig, timestamp_ms, tx_count FROM blocks WHERE height = 1"
    ).fetchone()
    assert row == (
        1,
        result.hash,
        canonical.dumps(result.header),
        result.sig,
        result.header["timestamp_ms"],
        1,
    )


def test_commit_block_moves_head(writer: Writer, commit: CommitBlock) -> None:
    result = commit()
    assert writer.head()["hash"] == result.hash


def test_commit_block_state_matches_memory(
    writer: Writer, chain: Chain, commit: CommitBlock
) -> None:
    post_id = commit(chain.tx("@alice", "CONTENT_POST_CREATE", {"body": "p"})).receipts[
        0
    ]["post_id"]
    commit(
        chain.tx(
            "@bob", "CONTENT_REACTION_SET", {"target_id": post_id, "reaction": "like"}
        )
    )
    # Clearing the reaction deletes its entry, which the writer must delete too.
    commit(
        chain.tx(
            "@bob", "CONTENT_REACTION_SET", {"target_id": post_id, "reaction": None}
        )
    )
    commit(chain.tx("@carol", "FOLLOW_SET", {"target": "@alice", "following": True}))
    assert all_state(writer.conn) == chain.state.entries


def test_commit_block_deletes_entries(
    writer: Writer, chain: Chain, commit: CommitBlock
) -> None:
    post_id = commit(chain.tx("@alice", "CONTENT_POST_CREATE", {"body": "p"})).receipts[
        0
    ]["post_id"]
    commit(
        chain.tx(
            "@bob", "CONTENT_REACTION_SET", {"target_id": post_id, "reaction": "like"}
        )
    )
    commit(
        chain.tx(
            "@bob", "CONTENT_REACTION_SET", {"target_id": post_id, "reaction": None}
        )
    )
    assert writer.state.get("reaction", f"{post_id}/@bob") is None


def test_blocks_built_over_sqlite_match(
    writer: Writer, chain: Chain, commit: CommitBlock
) -> None:
    # The producer builds over SqliteState, and the chain builds the same blocks over memory.
    post = chain.tx("@alice", "CONTENT_POST_CREATE", {"body": "p"})
    blocks = [
        [post, chain.tx("@carol", "FOLLOW_SET", {"target": "@bob", "following": True})],
        [],
        [
            chain.tx(
                "@bob",
                "CONTENT_REACTION_SET",
                {"target_id": post.tx_id, "reaction": "sad"},
            ),
            chain.tx("@dave", "PROFILE_UPDATE", {}),
        ],
    ]
    for envs in blocks:
        over_sqlite = build_block(
            writer.state,
            writer.head()["header"],
            envs,
            timestamp_ms=chain.now_ms,
            genesis=chain.info,
            producer_pubkey=chain.producer_key.pubkey,
            sign=None,
        )
        over_memory = commit(*envs)
        assert over_sqlite.header == over_memory.header


def test_commit_block_not_pending_stores_nothing(writer: Writer, chain: Chain) -> None:
    stored = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    never_stored = chain.tx("@bob", "PROFILE_UPDATE", {"bio": "y"})
    writer.store_pending([(stored, 1)])
    before = snapshot(writer)
    result = chain.block(stored, never_stored)
    with pytest.raises(StorageError, match="1 transactions were not pending"):
        writer.commit_block(result)
    assert snapshot(writer) == before


def test_commit_block_not_pending_keeps_pending(writer: Writer, chain: Chain) -> None:
    stored = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    writer.store_pending([(stored, 1)])
    result = chain.block(stored, chain.tx("@bob", "PROFILE_UPDATE", {"bio": "y"}))
    with pytest.raises(StorageError):
        writer.commit_block(result)
    assert writer.tx_status(stored.tx_id)["status"] == "pending"
    assert writer.head()["height"] == 0
    assert writer.state.get("account", "@alice")["next_nonce"] == 1


def test_commit_block_twice_stores_nothing(
    writer: Writer, chain: Chain, commit: CommitBlock
) -> None:
    result = commit(chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"}))
    before = snapshot(writer)
    with pytest.raises(StorageError):
        writer.commit_block(result)
    assert snapshot(writer) == before


def test_commit_block_after_failure(writer: Writer, chain: Chain) -> None:
    # A failed commit leaves no transaction open, so the next one works.
    stored = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    writer.store_pending([(stored, 1)])
    with pytest.raises(StorageError):
        writer.commit_block(
            chain.block(stored, chain.tx("@bob", "PROFILE_UPDATE", {"bio": "y"}))
        )
    assert not writer.conn.in_transaction
    retry = Chain()  # the same chain from genesis, without the failed block
    writer.commit_block(retry.block(stored))
    assert writer.tx_status(stored.tx_id)["status"] == "committed"


# -- expire and checkpoint -----------------------------------------------------------------------


def test_expire_marks_pending(writer: Writer, chain: Chain) -> None:
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"}, nonce=5)
    writer.store_pending([(env, 1)])
    assert writer.expire([env.tx_id]) == 1
    assert writer.tx_status(env.tx_id)["status"] == "expired"
    assert writer.pending() == []


def test_expire_skips_committed(
    writer: Writer, chain: Chain, commit: CommitBlock
) -> None:
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    commit(env)
    assert writer.expire([env.tx_id]) == 0
    assert writer.tx_status(env.tx_id)["status"] == "committed"


def test_expire_unknown_id(writer: Writer) -> None:
    assert writer.expire(["b" + "a" * 52]) == 0


@pytest.mark.parametrize("mode", ["PASSIVE", "FULL", "RESTART", "TRUNCATE"])
def test_checkpoint_modes(writer: Writer, mode: str) -> None:
    busy, _, _ = writer.checkpoint(mode)
    assert busy == 0


def test_checkpoint_truncate_empties_wal(writer: Writer, db_path: Path) -> None:
    writer.checkpoint("TRUNCATE")
    assert os.path.getsize(f"{db_path}-wal") == 0


def test_checkpoint_rejects_mode(writer: Writer) -> None:
    with pytest.raises(ValueError, match="unknown checkpoint mode"):
        writer.checkpoint("truncate; DROP TABLE txs")
