"""A benchmark chain: many tier-2 accounts in genesis, and pre-signed envelopes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from weall.protocol import keys
from weall.protocol.envelope import build_envelope
from weall.protocol.params import DEV_OVERRIDES

__all__ = ["BenchChain", "write_chain"]

CHAIN_ID = "weall-bench"


class BenchChain:
    """Keys of the bench accounts and the envelopes they sign, nonce by nonce."""

    def __init__(self, accounts: list[keys.KeyPair]) -> None:
        self.accounts = accounts
        self.next_nonce = {key.account: 1 for key in accounts}

    def envelopes(
        self, count: int, body: str = "benchmark post"
    ) -> list[dict[str, Any]]:
        """``count`` signed posts, spread round-robin over the accounts."""
        result = []
        for index in range(count):
            key = self.accounts[index % len(self.accounts)]
            assert key.account is not None
            nonce = self.next_nonce[key.account]
            self.next_nonce[key.account] = nonce + 1
            result.append(
                build_envelope(
                    key,
                    chain_id=CHAIN_ID,
                    tx_type="CONTENT_POST_CREATE",
                    signer=key.account,
                    nonce=nonce,
                    payload={"body": f"{body} {index}"},
                )
            )
        return result


def write_chain(
    workdir: Path, *, accounts: int, params: dict[str, Any] | None = None
) -> tuple[BenchChain, dict[str, str]]:
    """Write node key, genesis and settings for a bench node in ``workdir``; return its env."""
    data = workdir / "data"
    (data / "keys").mkdir(parents=True, exist_ok=True)
    node = keys.generate("@node")
    keys.write_key_file(data / "keys" / "node.key", node, overwrite=True)
    members = [keys.generate(f"@bench{i:05d}") for i in range(accounts)]
    document = {
        "chain_id": CHAIN_ID,
        "genesis_time_ms": int(time.time() * 1000),
        "producer": node.pubkey,
        "params": {**DEV_OVERRIDES, **(params or {})},
        "accounts": [
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
                for key in members
            ),
        ],
    }
    genesis_path = data / "genesis.json"
    genesis_path.write_text(json.dumps(document))
    os.chmod(data / "keys" / "node.key", 0o600)
    env = {
        "WEALL_CHAIN_ID": CHAIN_ID,
        "WEALL_GENESIS_PATH": str(genesis_path),
        "WEALL_LOG_LEVEL": "WARNING",
        "WEALL_BACKUP_INTERVAL_S": "0",
        "WEALL_RATE_LIMIT_PER_S": "0",
    }
    return BenchChain(members), env
