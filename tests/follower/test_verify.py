"""The follower's checks and its writer method, on real SQLite files.

A chain is built offline, served as the api would (``views.blocks_page``,
through JSON), and verified block by block into a second database, as the
follower does.
"""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from weall.api import views
from weall.errors import StorageError, UpstreamRejected
from weall.follow.verify import (
    VerifiedBlock,
    check_identity,
    check_page,
    verify_block,
    verify_genesis_block,
)
from weall.protocol.block import block_hash, block_signing_bytes
from weall.protocol.encoding import hash_bytes
from weall.protocol.genesis import genesis_info
from weall.protocol.keys import KeyPair
from weall.storage.reader import read_once
from weall.storage.writer import Writer

from .chain_builder import BuiltChain, account_key, build_chain, write_chain_files

Block = dict[str, Any]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> BuiltChain:
    return build_chain(
        tmp_path_factory.mktemp("chain"), posters=3, blocks=3, txs_per_block=4
    )


@pytest.fixture(scope="module")
def blocks(chain: BuiltChain) -> list[Block]:
    page = read_once(
        chain.data / "weall.db", lambda conn: views.blocks_page(conn, 0, 100)
    )
    served: list[Block] = orjson.loads(orjson.dumps(page))["blocks"]
    return served


@pytest.fixture
def follower(tmp_path: Path, chain: BuiltChain, blocks: list[Block]) -> Writer:
    writer = Writer(tmp_path / "follower.db", synchronous="NORMAL")
    writer.migrate()
    writer.initialize(chain.document, verify_genesis_block(chain.document, blocks[0]))
    return writer


def _committed(writer: Writer) -> Callable[[list[str]], dict[str, int]]:
    def lookup(tx_ids: list[str]) -> dict[str, int]:
        return {
            t: row["height"] for t in tx_ids if (row := writer.tx_status(t)) is not None
        }

    return lookup


def _verify(writer: Writer, chain: BuiltChain, block: Block) -> VerifiedBlock:
    return verify_block(
        writer.state,
        writer.head(),
        block,
        genesis_info(chain.document),
        committed=_committed(writer),
    )


def _resign(block: Block, key: KeyPair) -> Block:
    block["hash"] = block_hash(block["header"])
    block["sig"] = key.sign(block_signing_bytes(block["header"]))
    return block


def test_verified_blocks_match_producer(
    chain: BuiltChain, blocks: list[Block], follower: Writer
) -> None:
    for block in blocks[1:]:
        verified = _verify(follower, chain, block)
        follower.commit_verified_block(verified.result, verified.envelopes)
    conn = follower.conn
    producer = sqlite3.connect(chain.data / "weall.db")
    try:
        for height in range(chain.height + 1):
            assert views.block_view(conn, height) == views.block_view(
                producer, height
            ), height
        tx_id = blocks[2]["txs"][1]["tx_id"]
        assert views.tx_view(conn, tx_id) == views.tx_view(producer, tx_id)
        assert views.feed_page(conn, None, 100) == views.feed_page(producer, None, 100)
        state = producer.execute(
            "SELECT kind, key, value FROM state ORDER BY kind, key"
        ).fetchall()
    finally:
        producer.close()
    assert (
        conn.execute("SELECT kind, key, value FROM state ORDER BY kind, key").fetchall()
        == state
    )
    statuses = {row[0] for row in conn.execute("SELECT status FROM txs")}
    assert statuses == {"committed"}


def _edit(path: str, value: Any) -> Callable[[Block, KeyPair], Block]:
    """Set a nested field such as ``txs.0.receipt`` without re-signing."""

    def edit(block: Block, key: KeyPair) -> Block:
        parts = path.split(".")
        target: Any = block
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        target[parts[-1]] = value
        return block

    return edit


def _resigned(path: str, value: Any) -> Callable[[Block, KeyPair], Block]:
    def edit(block: Block, key: KeyPair) -> Block:
        return _resign(_edit(path, value)(block, key), key)

    return edit


def _swap(block: Block, key: KeyPair) -> Block:
    block["txs"][0], block["txs"][1] = block["txs"][1], block["txs"][0]
    block["header"]["tx_ids"] = [tx["tx_id"] for tx in block["txs"]]
    return _resign(block, key)


def _drop_last(block: Block, key: KeyPair) -> Block:
    block["txs"].pop()
    block["header"]["tx_ids"].pop()
    return _resign(block, key)


def _other_producer(block: Block, key: KeyPair) -> Block:
    other = account_key("@node", "another chain")
    block["header"]["producer"] = other.pubkey
    return _resign(block, other)


FORGERIES = [
    pytest.param(
        _edit("txs.0.envelope.payload.body", "forged"),
        "sig does not verify",
        id="tx-body",
    ),
    pytest.param(
        _edit("sig", "u" + "A" * 86),
        "producer signature does not verify",
        id="block-sig",
    ),
    pytest.param(
        _edit("hash", hash_bytes(b"x")), "block hash does not match", id="block-hash"
    ),
    pytest.param(_swap, "receipts hash does not match a replay", id="swapped-resigned"),
    pytest.param(
        _drop_last, "receipts hash does not match a replay", id="dropped-tx-resigned"
    ),
    pytest.param(
        _resigned("header.state_root", hash_bytes(b"x")),
        "state root does not match",
        id="state-root-resigned",
    ),
    pytest.param(
        _resigned("header.receipts_hash", hash_bytes(b"x")),
        "receipts hash does not match",
        id="receipts-hash-resigned",
    ),
    pytest.param(
        _resigned("header.timestamp_ms", 1), "timestamp_ms is not after", id="timestamp"
    ),
    pytest.param(
        _resigned("header.prev_hash", hash_bytes(b"x")),
        "prev_hash does not link",
        id="prev-hash-resigned",
    ),
    pytest.param(
        _resigned("header.height", 7), "expected height 1", id="height-resigned"
    ),
    pytest.param(
        _resigned("header.chain_id", "weall-other"), "chain_id", id="chain-id-resigned"
    ),
    pytest.param(
        _other_producer, "other than the genesis producer", id="other-producer"
    ),
    pytest.param(
        _edit("txs.0.receipt", {"ok": False, "code": "x", "message": "y"}),
        "differs from the replay",
        id="served-receipt",
    ),
    pytest.param(
        _edit("txs.0.receipt", None), "differs from the replay", id="missing-receipt"
    ),
    pytest.param(_edit("txs", []), "do not match the header's tx_ids", id="no-txs"),
    pytest.param(
        _edit("header.extra", 1), "exactly the fields", id="extra-header-field"
    ),
    pytest.param(
        _edit("txs.0.tx_id", 5), "do not match the header's tx_ids", id="tx-id-type"
    ),
    pytest.param(
        _edit("header.timestamp_ms", 1.5), "timestamp_ms an integer", id="float-time"
    ),
]


@pytest.mark.parametrize(("forge", "reason"), FORGERIES)
def test_forged_block_rejected(
    chain: BuiltChain,
    blocks: list[Block],
    follower: Writer,
    forge: Callable[[Block, KeyPair], Block],
    reason: str,
) -> None:
    forged = forge(copy.deepcopy(blocks[1]), chain.node)
    with pytest.raises(UpstreamRejected) as caught:
        _verify(follower, chain, forged)
    assert caught.value.height == 1
    assert reason in caught.value.reason
    assert follower.head()["height"] == 0


@pytest.mark.parametrize("value", [None, 5, "block", [], {"height": 1}], ids=repr)
def test_malformed_block_rejected(
    chain: BuiltChain, follower: Writer, value: Any
) -> None:
    with pytest.raises(UpstreamRejected) as caught:
        _verify(follower, chain, value)
    assert caught.value.height == 1
    assert "exactly the fields" in caught.value.reason


def test_block_out_of_order_rejected(
    chain: BuiltChain, blocks: list[Block], follower: Writer
) -> None:
    with pytest.raises(UpstreamRejected) as caught:
        _verify(follower, chain, blocks[2])
    assert caught.value.height == 1
    assert "expected height 1" in caught.value.reason


def test_repeated_transaction_rejected(
    chain: BuiltChain, blocks: list[Block], follower: Writer
) -> None:
    verified = _verify(follower, chain, blocks[1])
    follower.commit_verified_block(verified.result, verified.envelopes)
    # Block 2 re-signed with a transaction of block 1 in front.
    forged = copy.deepcopy(blocks[2])
    forged["txs"].insert(0, copy.deepcopy(blocks[1]["txs"][0]))
    forged["header"]["tx_ids"].insert(0, blocks[1]["txs"][0]["tx_id"])
    _resign(forged, chain.node)
    with pytest.raises(UpstreamRejected) as caught:
        _verify(follower, chain, forged)
    assert caught.value.height == 2
    assert "already committed at height 1" in caught.value.reason


def test_commit_verified_block_is_atomic(
    chain: BuiltChain, blocks: list[Block], follower: Writer
) -> None:
    verified = _verify(follower, chain, blocks[1])
    # A transaction row that already exists makes the whole block fail.
    follower.conn.execute(
        "INSERT INTO txs (tx_id, signer, nonce, tx_type, status, envelope, received_ms)"
        " VALUES (?, '@x', 0, 'ACCOUNT_REGISTER', 'pending', '{}', 0)",
        (verified.envelopes[-1].tx_id,),
    )
    with pytest.raises(StorageError):
        follower.commit_verified_block(verified.result, verified.envelopes)
    assert follower.head()["height"] == 0
    assert follower.conn.execute("SELECT COUNT(*) FROM txs").fetchone()[0] == 1
    with pytest.raises(StorageError):
        follower.commit_verified_block(verified.result, verified.envelopes[:-1])


def test_genesis_block_of_other_document_rejected(
    tmp_path: Path, blocks: list[Block]
) -> None:
    other = write_chain_files(tmp_path / "other", salt="another chain").document
    with pytest.raises(UpstreamRejected) as caught:
        verify_genesis_block(other, blocks[0])
    assert caught.value.height == 0
    assert "does not commit this node's genesis document" in caught.value.reason


def test_genesis_block_bad_signature_rejected(
    chain: BuiltChain, blocks: list[Block]
) -> None:
    forged = copy.deepcopy(blocks[0])
    forged["sig"] = account_key("@node", "another chain").sign(
        block_signing_bytes(forged["header"])
    )
    with pytest.raises(UpstreamRejected) as caught:
        verify_genesis_block(chain.document, forged)
    assert "producer signature does not verify" in caught.value.reason


@pytest.mark.parametrize(
    ("snapshot", "reason"),
    [
        pytest.param(
            {"chain_id": "weall-other"}, "serves chain 'weall-other'", id="chain-id"
        ),
        pytest.param(
            {"chain_id": "weall-dev", "genesis_hash": "bx"},
            "genesis hash is bx",
            id="genesis",
        ),
        pytest.param([], "not a JSON object", id="not-object"),
    ],
)
def test_identity_mismatch_rejected(
    chain: BuiltChain, snapshot: Any, reason: str
) -> None:
    with pytest.raises(UpstreamRejected) as caught:
        check_identity(snapshot, genesis_info(chain.document))
    assert caught.value.height is None
    assert reason in caught.value.reason


def test_identity_match_accepted(chain: BuiltChain) -> None:
    info = genesis_info(chain.document)
    check_identity({"chain_id": info.chain_id, "genesis_hash": info.genesis_hash}, info)


@pytest.mark.parametrize(
    "page",
    [
        None,
        {"blocks": None},
        {"blocks": [], "head_height": "7"},
        {"blocks": [], "head_height": True},
    ],
    ids=repr,
)
def test_malformed_page_rejected(page: Any) -> None:
    with pytest.raises(UpstreamRejected) as caught:
        check_page(page, 5)
    assert caught.value.height == 5
