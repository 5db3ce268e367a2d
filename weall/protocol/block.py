"""Blocks: headers, hashes, signatures, receipts and state roots.

The block hash is the hash of ``weall/block/v1`` and a newline followed by the
canonical header; ``sig`` is the producer's signature of those same bytes.
``state_root`` of block n is ``next_state_root(root of n-1, changes of n)``.
Block 0 has no transactions, ``prev_hash`` equal to the genesis hash, and
``state_root`` committing the genesis entries over the genesis hash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from weall.errors import ProtocolError
from weall.protocol import canonical
from weall.protocol.encoding import decode_pubkey, decode_sig, hash_bytes
from weall.protocol.envelope import Envelope
from weall.protocol.execute import apply_tx, chain_params
from weall.protocol.keys import KeyPair, verify
from weall.protocol.state import Overlay, StateReader, state_root_of_raw
from weall.protocol.txtypes import GenesisInfo

__all__ = [
    "END_BLOCK_HOOKS",
    "BlockResult",
    "block_hash",
    "build_block",
    "genesis_block",
    "receipts_hash",
    "verify_block_signature",
]

BLOCK_PREFIX: Final = b"weall/block/v1\n"
HEADER_FIELDS: Final = (
    "chain_id",
    "height",
    "prev_hash",
    "timestamp_ms",
    "producer",
    "tx_ids",
    "receipts_hash",
    "state_root",
)

# Called after the block's transactions, with (state, height, timestamp_ms,
# params); they close proposals, expire requests and the like. Each hook is
# deterministic and writes only into the overlay. ``weall.protocol.rules``
# fills this list in the fixed order of its ``END_BLOCK_ORDER``.
EndBlockHook = Callable[[Overlay, int, int, dict[str, Any]], None]
END_BLOCK_HOOKS: list[EndBlockHook] = []


@dataclass
class BlockResult:
    """A built block: header, signature, receipts and the state it changes."""

    header: dict[str, Any]
    hash: str
    sig: str
    receipts: list[dict[str, Any]]
    state: Overlay

    @property
    def height(self) -> int:
        return int(self.header["height"])


def block_signing_bytes(header: dict[str, Any]) -> bytes:
    return BLOCK_PREFIX + canonical.dumps(header)


def block_hash(header: dict[str, Any]) -> str:
    return hash_bytes(block_signing_bytes(header))


def receipts_hash(receipts: Sequence[dict[str, Any]]) -> str:
    return hash_bytes(canonical.dumps(list(receipts)))


def verify_block_signature(header: dict[str, Any], sig: str) -> bool:
    try:
        return verify(
            decode_pubkey(header["producer"]),
            block_signing_bytes(header),
            decode_sig(sig),
        )
    except ProtocolError:
        return False


def genesis_block(
    genesis_doc: dict[str, Any], state: Overlay, key: KeyPair
) -> BlockResult:
    """Block 0 over the genesis entries in ``state``."""
    info_hash = hash_bytes(canonical.dumps(genesis_doc))
    root = state_root_of_raw(info_hash, state.raw_changes())
    header = {
        "chain_id": genesis_doc["chain_id"],
        "height": 0,
        "prev_hash": info_hash,
        "timestamp_ms": genesis_doc["genesis_time_ms"],
        "producer": genesis_doc["producer"],
        "tx_ids": [],
        "receipts_hash": receipts_hash([]),
        "state_root": root,
    }
    return BlockResult(
        header, block_hash(header), key.sign(block_signing_bytes(header)), [], state
    )


def build_block(
    base: StateReader,
    prev_header: dict[str, Any],
    txs: Sequence[Envelope],
    *,
    timestamp_ms: int,
    genesis: GenesisInfo,
    producer_pubkey: str,
    sign: Callable[[bytes], str] | None,
) -> BlockResult:
    """Apply ``txs`` in order over ``base`` and build the next block.

    With ``sign`` set to ``None`` the block is unsigned (``sig`` is empty), for
    replays that only compare roots.
    """
    height = int(prev_header["height"]) + 1
    if timestamp_ms <= prev_header["timestamp_ms"]:
        raise ValueError("block timestamp must exceed the previous block's")
    state = Overlay(base)
    receipts = [
        apply_tx(state, env, height=height, timestamp_ms=timestamp_ms, genesis=genesis)
        for env in txs
    ]
    params = chain_params(state)
    for hook in END_BLOCK_HOOKS:
        hook(state, height, timestamp_ms, params)
    header = {
        "chain_id": genesis.chain_id,
        "height": height,
        "prev_hash": block_hash(prev_header),
        "timestamp_ms": timestamp_ms,
        "producer": producer_pubkey,
        "tx_ids": [env.tx_id for env in txs],
        "receipts_hash": receipts_hash(receipts),
        "state_root": state_root_of_raw(prev_header["state_root"], state.raw_changes()),
    }
    sig = sign(block_signing_bytes(header)) if sign is not None else ""
    return BlockResult(header, block_hash(header), sig, receipts, state)
