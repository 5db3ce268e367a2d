"""Checks of what an upstream node serves, before a follower commits any of it.

Every check is pure: it reads the follower's committed state through a
``StateReader`` and raises ``UpstreamRejected`` naming the height and the
reason at the first failure.

A block passes when all of these hold:

- its shape is valid, and its hash, height and ``prev_hash`` link it to the
  follower's tip;
- the genesis producer signed it;
- every transaction is signed for this chain and hashes to its id in
  ``tx_ids``, and none is committed already;
- a replay of its transactions over the committed state reproduces its
  receipts hash, its state root and the receipts served beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from weall.errors import ProtocolError, UpstreamRejected
from weall.protocol import canonical, keys
from weall.protocol.block import (
    HEADER_FIELDS,
    BlockResult,
    block_hash,
    build_block,
    genesis_block,
    verify_block_signature,
)
from weall.protocol.envelope import Envelope, parse_envelope
from weall.protocol.genesis import genesis_info, genesis_state
from weall.protocol.state import MemoryState, StateReader
from weall.protocol.txtypes import GenesisInfo

__all__ = [
    "VerifiedBlock",
    "check_identity",
    "check_page",
    "verify_block",
    "verify_genesis_block",
]

log = logging.getLogger(__name__)

BLOCK_FIELDS: Final = frozenset({"height", "hash", "header", "sig", "txs"})
TX_FIELDS: Final = frozenset({"tx_id", "envelope", "receipt"})

# Returns the ids among its argument that are already committed, with their heights.
CommittedLookup = Callable[[list[str]], dict[str, int]]


@dataclass(frozen=True)
class VerifiedBlock:
    """A block that passed every check, ready for ``Writer.commit_verified_block``."""

    result: BlockResult
    envelopes: list[Envelope]

    @property
    def height(self) -> int:
        return self.result.height


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_identity(snapshot: Any, info: GenesisInfo) -> None:
    """Compare the chain id and genesis hash of ``/v1/state/snapshot`` with ours."""
    if not isinstance(snapshot, dict):
        raise UpstreamRejected(None, "/v1/state/snapshot is not a JSON object")
    chain_id = snapshot.get("chain_id")
    if chain_id != info.chain_id:
        raise UpstreamRejected(
            None,
            f"upstream serves chain {chain_id!r}, this node's genesis is for {info.chain_id!r}",
        )
    found = snapshot.get("genesis_hash")
    if found != info.genesis_hash:
        raise UpstreamRejected(
            None,
            f"upstream genesis hash is {found}, this node's genesis document hashes to "
            f"{info.genesis_hash}",
        )


def check_page(document: Any, start: int) -> tuple[list[Any], int | None]:
    """Return the blocks and ``head_height`` of a ``/v1/blocks`` page."""
    if not isinstance(document, dict) or not isinstance(document.get("blocks"), list):
        raise UpstreamRejected(start, "/v1/blocks page has no list of blocks")
    head = document.get("head_height")
    if head is not None and not _is_int(head):
        raise UpstreamRejected(
            start, "/v1/blocks page has a head_height that is not an integer"
        )
    return document["blocks"], head


def _check_shape(block: Any, height: int) -> None:
    if not isinstance(block, dict) or set(block) != BLOCK_FIELDS:
        raise UpstreamRejected(
            height, f"block must have exactly the fields {sorted(BLOCK_FIELDS)}"
        )
    header = block["header"]
    if not isinstance(header, dict) or set(header) != set(HEADER_FIELDS):
        raise UpstreamRejected(
            height, f"header must have exactly the fields {list(HEADER_FIELDS)}"
        )
    if not _is_int(block["height"]) or not isinstance(block["hash"], str):
        raise UpstreamRejected(
            height, "block height must be an integer and hash a string"
        )
    if not isinstance(block["sig"], str) or not isinstance(block["txs"], list):
        raise UpstreamRejected(height, "block sig must be a string and txs a list")
    if not isinstance(header["tx_ids"], list) or not _is_int(header["timestamp_ms"]):
        raise UpstreamRejected(
            height, "header tx_ids must be a list and timestamp_ms an integer"
        )
    for tx in block["txs"]:
        if not isinstance(tx, dict) or set(tx) != TX_FIELDS:
            raise UpstreamRejected(
                height, f"each transaction must have exactly {sorted(TX_FIELDS)}"
            )


def _check_header(
    block: dict[str, Any], prev: dict[str, Any], info: GenesisInfo
) -> None:
    """Check height, hash, link, producer and signature of ``block`` against ``prev``."""
    expected = prev["height"] + 1
    header = block["header"]
    if block["height"] != expected or header["height"] != expected:
        raise UpstreamRejected(
            expected, f"expected height {expected}, upstream sent {block['height']!r}"
        )
    if header["chain_id"] != info.chain_id:
        raise UpstreamRejected(
            expected, f"header chain_id {header['chain_id']!r} is not ours"
        )
    try:
        computed = block_hash(header)
    except ProtocolError as exc:
        raise UpstreamRejected(
            expected, f"header is not canonical JSON: {exc.message}"
        ) from None
    if computed != block["hash"]:
        raise UpstreamRejected(expected, "block hash does not match the header")
    if header["prev_hash"] != prev["hash"]:
        raise UpstreamRejected(expected, "prev_hash does not link to this node's tip")
    if header["producer"] != info.producer_pubkey:
        raise UpstreamRejected(
            expected, "signed by a key other than the genesis producer"
        )
    if not verify_block_signature(header, block["sig"]):
        raise UpstreamRejected(expected, "producer signature does not verify")
    if header["timestamp_ms"] <= prev["header"]["timestamp_ms"]:
        raise UpstreamRejected(
            expected, "timestamp_ms is not after the previous block's"
        )


def _envelopes(
    block: dict[str, Any],
    info: GenesisInfo,
    committed: CommittedLookup,
    allow_unsigned: bool,
) -> list[Envelope]:
    """Parse and check the signature of every transaction, in ``tx_ids`` order."""
    height = block["height"]
    txs = block["txs"]
    if [tx["tx_id"] for tx in txs] != block["header"]["tx_ids"]:
        raise UpstreamRejected(height, "transactions do not match the header's tx_ids")
    if len(set(block["header"]["tx_ids"])) != len(txs):
        raise UpstreamRejected(height, "a transaction id appears twice in the block")
    envelopes = []
    for tx in txs:
        tx_id = str(tx["tx_id"])
        try:
            env = parse_envelope(tx["envelope"], allow_unsigned=allow_unsigned)
            if env.sig is not None or not allow_unsigned:
                env.verify_signature()
        except ProtocolError as exc:
            raise UpstreamRejected(
                height, f"transaction {tx_id}: {exc.message}"
            ) from None
        if env.tx_id != tx_id:
            raise UpstreamRejected(
                height, f"transaction {tx_id} does not hash to its id"
            )
        if env.chain_id != info.chain_id:
            raise UpstreamRejected(
                height, f"transaction {tx_id} is signed for chain {env.chain_id!r}"
            )
        envelopes.append(env)
    earlier = committed([env.tx_id for env in envelopes])
    if earlier:
        tx_id, at = next(iter(earlier.items()))
        raise UpstreamRejected(
            height, f"transaction {tx_id} is already committed at height {at}"
        )
    return envelopes


def _replay(
    state: StateReader,
    prev: dict[str, Any],
    envelopes: list[Envelope],
    header: dict[str, Any],
    info: GenesisInfo,
) -> BlockResult:
    height = header["height"]
    try:
        return build_block(
            state,
            prev["header"],
            envelopes,
            timestamp_ms=header["timestamp_ms"],
            genesis=info,
            producer_pubkey=info.producer_pubkey,
            sign=None,
        )
    except Exception as exc:
        # A handler that raises anything but TxRejected is a protocol bug or
        # a block that no honest producer could build. Either way nothing
        # of it may be committed. The traceback is for debugging only.
        log.debug("replay failed height=%d", height, exc_info=True)
        raise UpstreamRejected(
            height, f"replay failed: {type(exc).__name__}: {exc}"
        ) from None


def _compare(block: dict[str, Any], result: BlockResult) -> None:
    height = block["height"]
    header = block["header"]
    if result.header["receipts_hash"] != header["receipts_hash"]:
        raise UpstreamRejected(height, "receipts hash does not match a replay")
    if result.header["state_root"] != header["state_root"]:
        raise UpstreamRejected(height, "state root does not match a replay")
    different = sorted(
        name for name in HEADER_FIELDS if result.header[name] != header[name]
    )
    if different:
        raise UpstreamRejected(
            height, f"header fields {different} do not match a replay"
        )
    for tx, receipt in zip(block["txs"], result.receipts, strict=True):
        try:
            served = canonical.dumps(tx["receipt"])
        except ProtocolError:
            served = b""
        if served != canonical.dumps(receipt):
            raise UpstreamRejected(
                height, f"receipt served for {tx['tx_id']} differs from the replay"
            )


def verify_block(
    state: StateReader,
    prev: dict[str, Any],
    block: Any,
    info: GenesisInfo,
    *,
    committed: CommittedLookup,
    allow_unsigned: bool = False,
) -> VerifiedBlock:
    """Check one block served by the upstream against the follower's tip.

    Args:
        state: the follower's committed state at ``prev``.
        prev: the follower's tip: ``{"height", "hash", "header"}``.
        block: one entry of a ``/v1/blocks`` page, as parsed JSON.
        info: the chain's genesis.
        committed: returns which of the block's transaction ids are already
            committed, and at which height.
        allow_unsigned: accept envelopes without ``sig`` (a dev chain run with
            ``WEALL_ALLOW_UNSIGNED_TXS=1``).

    Raises:
        UpstreamRejected: at the first failed check, naming the height.
    """
    height = prev["height"] + 1
    _check_shape(block, height)
    _check_header(block, prev, info)
    envelopes = _envelopes(block, info, committed, allow_unsigned)
    result = _replay(state, prev, envelopes, block["header"], info)
    _compare(block, result)
    verified = BlockResult(
        block["header"], block["hash"], block["sig"], result.receipts, result.state
    )
    return VerifiedBlock(verified, envelopes)


def verify_genesis_block(document: dict[str, Any], block: Any) -> BlockResult:
    """Check the block 0 served by the upstream against the genesis document.

    Block 0 carries no transactions and its header follows from the genesis
    document alone, so it must equal the header this node computes. Only its
    signature comes from the upstream.
    """
    info = genesis_info(document)
    _check_shape(block, 0)
    state = genesis_state(document, MemoryState())
    # The header does not depend on the signing key, and the throwaway
    # signature is replaced by the upstream's below.
    expected = genesis_block(document, state, keys.generate()).header
    if block["height"] != 0 or block["header"] != expected or block["txs"]:
        raise UpstreamRejected(
            0, "block 0 does not commit this node's genesis document"
        )
    if block["hash"] != block_hash(expected):
        raise UpstreamRejected(0, "block hash does not match the header")
    if expected["producer"] != info.producer_pubkey or not verify_block_signature(
        expected, block["sig"]
    ):
        raise UpstreamRejected(0, "producer signature does not verify")
    return BlockResult(expected, block["hash"], block["sig"], [], state)
