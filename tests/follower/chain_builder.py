"""Build a producer's data directory offline, with the real writer and protocol.

Starting a producer on the result is the same as starting it on a data
directory that it filled itself. The genesis document and key files sit
where the dev defaults put them. Every block was built by ``build_block``,
signed by the node key and committed by ``Writer``, as the producer does.
This is how the tests get a chain of 100,000 transactions without
submitting them through the api, which admits at most 64 pending
transactions per signer.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import weall.protocol  # noqa: F401  registers the transaction handlers
from weall.protocol import keys
from weall.protocol.block import build_block, genesis_block
from weall.protocol.envelope import Envelope, build_envelope, parse_envelope
from weall.protocol.genesis import genesis_info, genesis_state
from weall.protocol.keys import KeyPair
from weall.protocol.params import DEV_OVERRIDES
from weall.protocol.state import MemoryState
from weall.storage.writer import Writer

__all__ = ["BuiltChain", "account_key", "build_chain", "write_chain_files"]

CHAIN_ID: Final = "weall-dev"
DAY_MS: Final = 86_400_000


def account_key(account_id: str, salt: str = "") -> KeyPair:
    """Return a deterministic key of ``account_id``; ``salt`` makes another chain's key."""
    seed = hashlib.sha256(f"weall-follower-tests/{salt}/{account_id}".encode()).digest()
    return keys.from_seed(seed, account_id)


@dataclass
class BuiltChain:
    """A producer data directory and what a test needs to know about it."""

    workdir: Path
    document: dict[str, Any]
    node: KeyPair
    founder: KeyPair
    posters: list[KeyPair] = field(default_factory=list)
    height: int = 0
    txs: int = 0
    next_nonce: dict[str, int] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def genesis_path(self) -> Path:
        return self.data / "genesis.json"


def write_chain_files(
    workdir: Path,
    *,
    posters: int = 0,
    extra_accounts: list[dict[str, Any]] | None = None,
    params: dict[str, Any] | None = None,
    salt: str = "",
    chain_id: str = CHAIN_ID,
) -> BuiltChain:
    """Write the genesis document and the node and founder key files of a new chain."""
    data = workdir / "data"
    node = account_key("@node", salt)
    founder = account_key("@founder", salt)
    poster_keys = [account_key(f"@poster{i:04d}", salt) for i in range(posters)]
    accounts = [
        {
            "id": "@founder",
            "pubkey": founder.pubkey,
            "poh_tier": 2,
            "roles": ["juror"],
            "balance": 1_000_000,
        },
        {
            "id": "@node",
            "pubkey": node.pubkey,
            "poh_tier": 2,
            "roles": ["node_operator", "producer"],
            "balance": 0,
        },
        *(
            {
                "id": key.account,
                "pubkey": key.pubkey,
                "poh_tier": 2,
                "roles": [],
                "balance": 0,
            }
            for key in poster_keys
        ),
        *(extra_accounts or []),
    ]

    document = {
        "chain_id": chain_id,
        # Three days back, so that the offline blocks (one second apart) all
        # lie in the past and the producer goes on from its own clock.
        "genesis_time_ms": int(time.time() * 1000) - 3 * DAY_MS,
        "producer": node.pubkey,
        "params": {**DEV_OVERRIDES, **(params or {})},
        "accounts": accounts,
    }

    (data / "keys").mkdir(parents=True, exist_ok=True)
    keys.write_key_file(data / "keys" / "node.key", node)
    keys.write_key_file(data / "keys" / "founder.key", founder)
    (data / "genesis.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    return BuiltChain(workdir, document, node, founder, poster_keys)


def _post(chain: BuiltChain, key: KeyPair, body: str) -> Envelope:
    assert key.account is not None
    nonce = chain.next_nonce.get(key.account, 1)
    chain.next_nonce[key.account] = nonce + 1
    document = build_envelope(
        key,
        chain_id=chain.document["chain_id"],
        tx_type="CONTENT_POST_CREATE",
        signer=key.account,
        nonce=nonce,
        payload={"body": body},
    )
    return parse_envelope(document)


def build_chain(
    workdir: Path, *, posters: int, blocks: int, txs_per_block: int, salt: str = ""
) -> BuiltChain:
    """Create a producer data directory whose chain has ``blocks`` blocks of posts.

    Transaction ``j`` of block ``b`` is a post by poster ``(b * txs_per_block + j)
    % posters``, so each block spreads over many signers as a busy chain does.
    """
    chain = write_chain_files(workdir, posters=posters, salt=salt)
    document = chain.document
    info = genesis_info(document)
    writer = Writer(chain.data / "weall.db", synchronous="NORMAL")
    try:
        writer.migrate()
        block0 = genesis_block(
            document, genesis_state(document, MemoryState()), chain.node
        )
        writer.initialize(document, block0)
        head = block0.header
        for number in range(1, blocks + 1):
            envelopes = [
                _post(
                    chain,
                    chain.posters[(number * txs_per_block + j) % posters],
                    f"post {number}/{j}",
                )
                for j in range(txs_per_block)
            ]
            timestamp = document["genesis_time_ms"] + number * 1000
            writer.store_pending([(env, timestamp) for env in envelopes])
            block = build_block(
                writer.state,
                head,
                envelopes,
                timestamp_ms=timestamp,
                genesis=info,
                producer_pubkey=chain.node.pubkey,
                sign=chain.node.sign,
            )
            writer.commit_block(block)
            head = block.header
            chain.txs += len(envelopes)
        chain.height = blocks
    finally:
        writer.close()
    return chain
