"""A chain in memory for protocol tests: genesis, admission and real blocks.

``Chain`` signs real envelopes with deterministic keys, admits them against
the committed state with ``admit`` and builds blocks with ``build_block``,
exactly as the producer does, then commits the block's changes to a
``MemoryState``. Every block's envelopes and timestamp are kept so that a
test can replay the chain from genesis and compare state roots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

import weall.protocol  # noqa: F401  registers the handlers
from weall.errors import TxRejected
from weall.protocol.block import build_block, genesis_block
from weall.protocol.envelope import Envelope, build_envelope, parse_envelope
from weall.protocol.execute import admit, chain_params
from weall.protocol.genesis import genesis_info, genesis_state
from weall.protocol.keys import KeyPair, from_seed
from weall.protocol.state import MemoryState

CHAIN_ID = "weall-test"
GENESIS_TIME_MS = 1_700_000_000_000
BLOCK_MS = 1000
PRODUCER_ID = "@producer"

# Strings in the CIDv1 base32 form that the payload rules accept, for pins and evidence.
CID_A = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
CID_B = "bafkreidgvpkjawlxz6sffxzwgooowe5yt7i6wsyg236mfoks77nywkptdq"


def key_for(account_id: str) -> KeyPair:
    """Return the deterministic test key of ``account_id``."""
    seed = hashlib.sha256(b"weall-test-key/" + account_id.encode()).digest()
    return from_seed(seed, account_id)


def account_entry(
    account_id: str, tier: int = 2, roles: Sequence[str] = (), balance: int = 0
) -> dict[str, Any]:
    """Return a genesis account entry with the test key of ``account_id``."""
    return {
        "id": account_id,
        "pubkey": key_for(account_id).pubkey,
        "poh_tier": tier,
        "roles": list(roles),
        "balance": balance,
    }


def genesis_document(
    accounts: Sequence[dict[str, Any]],
    params: dict[str, Any] | None = None,
    genesis_time_ms: int = GENESIS_TIME_MS,
) -> dict[str, Any]:
    """Build a genesis document; ``@producer`` is added unless an account has the role."""
    entries = list(accounts)
    producers = [a for a in entries if "producer" in a["roles"]]
    if not producers:
        entries.append(account_entry(PRODUCER_ID, 2, ["producer"]))
        producers = entries[-1:]
    return {
        "chain_id": CHAIN_ID,
        "genesis_time_ms": genesis_time_ms,
        "producer": producers[0]["pubkey"],
        "params": dict(params or {}),
        "accounts": entries,
    }


@dataclass
class Block:
    """A committed block as the harness keeps it for replays."""

    envelopes: list[Envelope]
    timestamp_ms: int
    header: dict[str, Any]
    receipts: list[dict[str, Any]]
    changes: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)


class Chain:
    """A single-producer chain over a ``MemoryState``."""

    def __init__(
        self,
        accounts: Sequence[dict[str, Any]],
        params: dict[str, Any] | None = None,
        *,
        genesis_time_ms: int = GENESIS_TIME_MS,
    ) -> None:
        self.document = genesis_document(accounts, params, genesis_time_ms)
        self.info = genesis_info(self.document)
        self.producer_id = next(
            a["id"] for a in self.document["accounts"] if "producer" in a["roles"]
        )
        self.producer_key = key_for(self.producer_id)
        self.state = MemoryState()
        overlay = genesis_state(self.document, self.state)
        block0 = genesis_block(self.document, overlay, self.producer_key)
        self.state.apply(overlay.changes())
        self.head = block0.header
        self.blocks: list[Block] = []
        self.next_timestamp_ms = genesis_time_ms + BLOCK_MS
        self.nonces: dict[str, int] = {}
        self.pending: list[Envelope] = []

    # -- reading ------------------------------------------------------------

    @property
    def height(self) -> int:
        return int(self.head["height"])

    @property
    def params(self) -> dict[str, Any]:
        return chain_params(self.state)

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.state.get(kind, key)

    def account(self, account_id: str) -> dict[str, Any]:
        account = self.state.get("account", account_id)
        assert account is not None, f"no account {account_id}"
        return account

    # -- envelopes ----------------------------------------------------------

    def next_nonce(self, signer: str) -> int:
        if signer not in self.nonces:
            account = self.state.get("account", signer)
            self.nonces[signer] = 0 if account is None else account["next_nonce"]
        return self.nonces[signer]

    def envelope(
        self,
        signer: str,
        tx_type: str,
        payload: dict[str, Any],
        *,
        nonce: int | None = None,
    ) -> Envelope:
        """Sign an envelope with the next nonce of ``signer`` (not consumed yet)."""
        if nonce is None:
            nonce = 0 if tx_type == "ACCOUNT_REGISTER" else self.next_nonce(signer)
        document = build_envelope(
            key_for(signer),
            chain_id=CHAIN_ID,
            tx_type=tx_type,
            signer=signer,
            nonce=nonce,
            payload=payload,
        )
        env = parse_envelope(document)
        env.verify_signature()
        return env

    def admit(self, env: Envelope) -> None:
        """Run admission against the committed state at the next block's time."""
        admit(
            self.state,
            env,
            now_ms=self.next_timestamp_ms,
            height=self.height + 1,
            genesis=self.info,
        )

    def _consume(self, env: Envelope) -> None:
        if env.tx_type == "ACCOUNT_REGISTER":
            # A register of a taken id fails in the block and consumes nothing.
            if self.state.get("account", env.signer) is None:
                self.nonces[env.signer] = 1
        else:
            self.nonces[env.signer] = env.nonce + 1

    def submit(self, signer: str, tx_type: str, payload: dict[str, Any]) -> Envelope:
        """Admit a transaction and queue it for the next block."""
        env = self.envelope(signer, tx_type, payload)
        self.admit(env)
        self.include(env)
        return env

    def include(self, env: Envelope) -> None:
        """Queue ``env`` for the next block without admission (as if the state moved on)."""
        self._consume(env)
        self.pending.append(env)

    # -- blocks -------------------------------------------------------------

    def commit(self, *, advance_ms: int = BLOCK_MS) -> list[dict[str, Any]]:
        """Build a block of the queued transactions, commit it, return its receipts."""
        txs, self.pending = self.pending, []
        timestamp = self.next_timestamp_ms
        result = build_block(
            self.state,
            self.head,
            txs,
            timestamp_ms=timestamp,
            genesis=self.info,
            producer_pubkey=self.producer_key.pubkey,
            sign=self.producer_key.sign,
        )
        changes = result.state.changes()
        self.state.apply(changes)
        self.head = result.header
        self.blocks.append(
            Block(txs, timestamp, result.header, result.receipts, changes)
        )
        self.next_timestamp_ms = timestamp + advance_ms
        return result.receipts

    def advance_to(self, height: int) -> None:
        """Commit empty blocks until the head is at ``height``."""
        while self.height < height:
            self.commit()

    def run(self, signer: str, tx_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Admit one transaction, commit it alone in a block, return its receipt."""
        self.submit(signer, tx_type, payload)
        (receipt,) = self.commit()
        return receipt

    def ok(self, signer: str, tx_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Like ``run``, and fail the test unless the receipt is ok."""
        receipt = self.run(signer, tx_type, payload)
        assert receipt["ok"], receipt
        return receipt

    def reject(
        self, signer: str, tx_type: str, payload: dict[str, Any], code: str
    ) -> TxRejected:
        """Check that ``code`` rejects the transaction at admission and in a block.

        The block path includes the same transaction without admission and
        checks that its receipt carries ``code`` and that the block changed
        nothing but the signer's nonce.
        """
        env = self.envelope(signer, tx_type, payload)
        with pytest.raises(TxRejected) as caught:
            self.admit(env)
        assert caught.value.code == code, caught.value
        self.include(env)
        (receipt,) = self.commit()
        assert not receipt["ok"], receipt
        assert receipt["code"] == code, receipt
        changed = [(kind, key) for kind, key, _ in self.blocks[-1].changes]
        if tx_type == "ACCOUNT_REGISTER":
            assert changed == [], changed
        else:
            assert changed == [("account", signer)], changed
        return caught.value

    def register(self, account_id: str) -> None:
        """Register a new tier 0 account with its test key."""
        self.ok(account_id, "ACCOUNT_REGISTER", {})

    def replay(self) -> Chain:
        """Replay every block from this chain's genesis and return the replayed chain.

        Fails the test when a replayed block's header or receipts differ from
        the committed ones, so when any state root differs.
        """
        replay = Chain(
            self.document["accounts"],
            self.document["params"],
            genesis_time_ms=self.document["genesis_time_ms"],
        )
        assert replay.info == self.info
        for block in self.blocks:
            result = build_block(
                replay.state,
                replay.head,
                block.envelopes,
                timestamp_ms=block.timestamp_ms,
                genesis=replay.info,
                producer_pubkey=replay.producer_key.pubkey,
                sign=replay.producer_key.sign,
            )
            assert result.header == block.header
            assert result.receipts == block.receipts
            replay.state.apply(result.state.changes())
            replay.head = result.header
        assert replay.state.entries == self.state.entries
        return replay
