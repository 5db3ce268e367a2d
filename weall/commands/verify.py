"""``weall verify``: replay the chain from genesis and check every block.

For every block it checks the header's shape, the stored hash, the link to
the previous block, the producer's signature, the transactions' signatures,
and then every header field (chain id, height, timestamp, tx ids, receipts
hash, state root) against a replay of the stored transactions over the
replayed state. It also checks the columns and meta rows that repeat signed
fields for queries, because the api serves them: each transaction's signer,
nonce and type, each block's timestamp and transaction count, and the chain
id and genesis hash. Any failure names the height of the first bad block.

The chain does not record the mode it ran in, so an unsigned transaction is
accepted only when ``weall verify`` itself runs with the settings under
which a node accepts one: ``WEALL_MODE=dev`` and
``WEALL_ALLOW_UNSIGNED_TXS=1``. Any other chain fails at the first unsigned
transaction.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from weall import config as config_module
from weall.errors import ProtocolError, StartupError
from weall.progress import Progress
from weall.protocol.block import (
    HEADER_FIELDS,
    block_hash,
    build_block,
    receipts_hash,
    verify_block_signature,
)
from weall.protocol.envelope import Envelope, parse_envelope
from weall.protocol.genesis import genesis_info, genesis_state
from weall.protocol.state import MemoryState, state_root_of_raw
from weall.protocol.txtypes import GenesisInfo
from weall.storage import queries
from weall.storage.db import open_readonly
from weall.storage.schema import current_version

__all__ = ["register", "verify_chain"]

log = logging.getLogger(__name__)
PAGE = 200


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="replay the chain and check every block",
        description=(
            "Replay the chain from genesis and check every block's hash, "
            "signature and state root. Unsigned transactions pass only with "
            "WEALL_MODE=dev and WEALL_ALLOW_UNSIGNED_TXS=1."
        ),
    )
    parser.add_argument("--db", help="database to check (default: WEALL_DB_PATH)")
    parser.set_defaults(func=verify_command)


class VerifyError(Exception):
    def __init__(self, height: int, reason: str) -> None:
        super().__init__(f"block {height}: {reason}")
        self.height = height


def verify_chain(
    conn: sqlite3.Connection,
    progress: Progress | None = None,
    *,
    allow_unsigned: bool = False,
) -> dict[str, int]:
    """Replay every block of ``conn``; raise ``VerifyError`` naming the first bad height.

    ``progress``, when given, is updated with the number of blocks verified.
    ``allow_unsigned`` accepts transactions without ``sig``, as a dev node
    run with ``WEALL_ALLOW_UNSIGNED_TXS=1`` admits them.
    """
    stored = queries.meta(conn)
    document = json.loads(stored["genesis_json"])
    info = genesis_info(document)
    _check_meta(stored, info)
    state = MemoryState()
    first = queries.block_at(conn, 0)
    if first is None:
        raise VerifyError(0, "missing")
    overlay = genesis_state(document, state)
    _verify_genesis_block(first, info, overlay.raw_changes())
    _check_block_columns(conn, first["header"])
    state.apply(overlay.changes())
    prev = first["header"]
    txs_total = 0
    height = 1
    while True:
        page = queries.blocks_from(conn, height, PAGE)
        if not page:
            break
        for block in page:
            _verify_one(conn, block, prev, state, info, allow_unsigned)
            txs_total += len(block["header"]["tx_ids"])
            prev = block["header"]
            height = block["height"] + 1
            if progress is not None:
                progress.update(height)
    _compare_state(conn, state, prev["height"])
    return {"height": prev["height"], "txs": txs_total}


def _check_meta(stored: dict[str, str], info: GenesisInfo) -> None:
    """Check the meta rows that the node reads in place of the genesis document."""
    expected = {"chain_id": info.chain_id, "genesis_hash": info.genesis_hash}
    for name, value in expected.items():
        if stored.get(name) != value:
            raise VerifyError(
                0,
                f"meta {name} {stored.get(name)!r} differs from the genesis "
                f"document's {value!r}",
            )


def _check_block_columns(conn: sqlite3.Connection, header: dict[str, Any]) -> None:
    """Check the columns that repeat header fields for queries (the api serves them)."""
    height = header["height"]
    timestamp_ms, tx_count = conn.execute(
        "SELECT timestamp_ms, tx_count FROM blocks WHERE height = ?", (height,)
    ).fetchone()
    if timestamp_ms != header["timestamp_ms"]:
        raise VerifyError(
            height, f"stored timestamp_ms {timestamp_ms} differs from the header's"
        )
    if tx_count != len(header["tx_ids"]):
        raise VerifyError(
            height, f"stored tx_count {tx_count} differs from the header's tx_ids"
        )


def _check_tx_columns(
    conn: sqlite3.Connection, height: int, envelopes: list[Envelope]
) -> None:
    """Check the columns that repeat envelope fields for queries (the api serves them)."""
    rows = conn.execute(
        "SELECT signer, nonce, tx_type FROM txs WHERE height = ? ORDER BY idx",
        (height,),
    ).fetchall()
    for env, (signer, nonce, tx_type) in zip(envelopes, rows, strict=True):
        stored = {"signer": signer, "nonce": nonce, "tx_type": tx_type}
        for name, value in stored.items():
            if value != getattr(env, name):
                raise VerifyError(
                    height,
                    f"transaction {env.tx_id}: stored {name} {value!r} differs "
                    "from the envelope's",
                )


def _compare_state(conn: sqlite3.Connection, state: MemoryState, height: int) -> None:
    """Compare every stored state row with the replayed state at the tip."""
    replayed = state.entries
    seen = 0
    # Databases from before migration 3 keep the whole state in the state table.
    source = "state_view" if current_version(conn) >= 3 else "state"
    for kind, key, raw in conn.execute(f"SELECT kind, key, value FROM {source}"):
        seen += 1
        expected = replayed.get((kind, key))
        if expected is None or orjson.loads(raw) != expected:
            raise VerifyError(
                height, f"stored state entry {kind}/{key} differs from the replay"
            )
    if seen != len(replayed):
        raise VerifyError(
            height, f"the stored state has {seen} entries, the replay {len(replayed)}"
        )


def _check_header_shape(height: int, header: Any) -> None:
    """Raise unless ``header`` has exactly the header fields, each of its type."""
    if not isinstance(header, dict) or set(header) != set(HEADER_FIELDS):
        raise VerifyError(height, f"header does not have the fields {HEADER_FIELDS}")
    for name in ("height", "timestamp_ms"):
        value = header[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise VerifyError(height, f"header {name} is not a non-negative integer")
    for name in ("chain_id", "prev_hash", "producer", "receipts_hash", "state_root"):
        if not isinstance(header[name], str):
            raise VerifyError(height, f"header {name} is not a string")
    tx_ids = header["tx_ids"]
    if not isinstance(tx_ids, list) or not all(isinstance(t, str) for t in tx_ids):
        raise VerifyError(height, "header tx_ids is not a list of ids")


def _verify_genesis_block(
    first: dict[str, Any], info: GenesisInfo, changes: list[Any]
) -> None:
    """Check that block 0 is exactly the block the genesis document defines."""
    header = first["header"]
    _check_header_shape(0, header)
    expected = {
        "chain_id": info.chain_id,
        "height": 0,
        "prev_hash": info.genesis_hash,
        "timestamp_ms": info.genesis_time_ms,
        "producer": info.producer_pubkey,
        "tx_ids": [],
        "receipts_hash": receipts_hash([]),
        "state_root": state_root_of_raw(info.genesis_hash, changes),
    }
    if header != expected:
        raise VerifyError(0, "block 0 does not commit the genesis document")
    if block_hash(header) != first["hash"]:
        raise VerifyError(0, "stored hash does not match the header")
    if not verify_block_signature(header, first["sig"]):
        raise VerifyError(0, "producer signature does not verify")


def _check_signed_header(
    block: dict[str, Any], prev: dict[str, Any], info: GenesisInfo
) -> None:
    """Check the parts of a header that need no replay: hash, link, signature, time."""
    header = block["header"]
    height = block["height"]
    _check_header_shape(height, header)
    if header["height"] != height or height != prev["height"] + 1:
        raise VerifyError(height, "height out of sequence")
    if block_hash(header) != block["hash"]:
        raise VerifyError(height, "stored hash does not match the header")
    if header["prev_hash"] != block_hash(prev):
        raise VerifyError(height, "prev_hash does not link to the previous block")
    if header["producer"] != info.producer_pubkey:
        raise VerifyError(height, "signed by a key other than the genesis producer")
    if not verify_block_signature(header, block["sig"]):
        raise VerifyError(height, "producer signature does not verify")
    if header["timestamp_ms"] <= prev["timestamp_ms"]:
        raise VerifyError(
            height,
            f"timestamp_ms {header['timestamp_ms']} does not exceed the previous "
            f"block's {prev['timestamp_ms']}",
        )


def _stored_envelopes(
    height: int, txs: list[dict[str, Any]], allow_unsigned: bool
) -> list[Envelope]:
    envelopes = []
    for tx in txs:
        try:
            env = parse_envelope(tx["envelope"], allow_unsigned=allow_unsigned)
            if env.sig is not None or not allow_unsigned:
                env.verify_signature()
        except ProtocolError as exc:
            raise VerifyError(
                height, f"transaction {tx['tx_id']}: {exc.message}"
            ) from None
        if env.tx_id != tx["tx_id"]:
            raise VerifyError(
                height, f"transaction {tx['tx_id']} does not hash to its id"
            )
        envelopes.append(env)
    return envelopes


def _verify_one(
    conn: sqlite3.Connection,
    block: dict[str, Any],
    prev: dict[str, Any],
    state: MemoryState,
    info: GenesisInfo,
    allow_unsigned: bool,
) -> None:
    _check_signed_header(block, prev, info)
    header = block["header"]
    height = block["height"]
    txs = queries.txs_in_block(conn, height)
    if [t["tx_id"] for t in txs] != header["tx_ids"]:
        raise VerifyError(height, "stored transactions do not match tx_ids")
    envelopes = _stored_envelopes(height, txs, allow_unsigned)
    _check_block_columns(conn, header)
    _check_tx_columns(conn, height, envelopes)
    try:
        result = build_block(
            state,
            prev,
            envelopes,
            timestamp_ms=header["timestamp_ms"],
            genesis=info,
            producer_pubkey=header["producer"],
            sign=None,
        )
    except ValueError as exc:
        raise VerifyError(height, f"the block cannot be replayed: {exc}") from None
    if result.header["receipts_hash"] != header["receipts_hash"]:
        raise VerifyError(height, "receipts do not match a replay")
    stored_receipts = [tx["receipt"] for tx in txs]
    if stored_receipts != result.receipts:
        raise VerifyError(
            height, "stored receipts differ from the ones the block committed"
        )
    for tx, receipt in zip(txs, result.receipts, strict=True):
        if tx["status"] != ("committed" if receipt["ok"] else "rejected"):
            raise VerifyError(
                height, f"transaction {tx['tx_id']} has status {tx['status']}"
            )
    if result.header["state_root"] != header["state_root"]:
        raise VerifyError(height, "state root does not match a replay")
    # Every other field (chain id, tx ids, link, producer) must equal the
    # replay's too, so a header re-signed with other values still fails.
    for name in HEADER_FIELDS:
        if result.header[name] != header[name]:
            raise VerifyError(height, f"header {name} does not match a replay")
    state.apply(result.state.changes())


def verify_command(args: argparse.Namespace) -> int:
    config = config_module.load()
    path = config.db_path if args.db is None else Path(args.db)
    if not path.exists():
        raise StartupError(f"database {path} not found")
    started = time.monotonic()
    conn = open_readonly(path)
    try:
        head = queries.head_header(conn)
        total = None if head is None else head["height"] + 1
        allow_unsigned = config.mode == "dev" and config.allow_unsigned_txs
        try:
            with Progress("verify", total=total, unit="blocks") as progress:
                summary = verify_chain(conn, progress, allow_unsigned=allow_unsigned)
        except VerifyError as exc:
            print(
                f"weall verify: FAILED at height {exc.height}: {exc}", file=sys.stderr
            )
            return 1
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    rate = summary["txs"] / elapsed if elapsed > 0 else 0.0
    print(
        f"ok: {summary['height'] + 1} blocks, {summary['txs']} transactions verified "
        f"in {elapsed:.1f} s ({rate:.0f} tx/s)"
    )
    return 0
