"""Shared test helpers: named key pairs, a dev-like genesis, signed envelopes
and a chain that builds real blocks over a ``MemoryState``.

Typical use::

    chain = Chain()                       # DEFAULT_ACCOUNTS, DEV_OVERRIDES
    receipt = chain.run("@alice", "CONTENT_POST_CREATE", {"body": "hi"})
    assert receipt["ok"]

Keys are derived from the account id, so every run signs the same bytes, and
``Chain.replay()`` rebuilds every block from genesis. Nothing here reads a
clock: chain time starts at ``GENESIS_TIME_MS`` and each block is
``BLOCK_MS`` later than the previous one unless a test passes a timestamp.
The public names below are used by several test modules, so change them only
in a backward-compatible way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import weall.protocol  # noqa: F401  registers the transaction handlers
from weall.protocol.block import BlockResult, build_block, genesis_block
from weall.protocol.envelope import Envelope, build_envelope, parse_envelope
from weall.protocol.execute import admit, chain_params
from weall.protocol.genesis import genesis_info, genesis_state
from weall.protocol.keys import KeyPair, from_seed
from weall.protocol.params import DAY_MS, DEV_OVERRIDES
from weall.protocol.state import MemoryState

__all__ = [
    "BLOCK_MS",
    "CHAIN_ID",
    "CID",
    "DEFAULT_ACCOUNTS",
    "GENESIS_TIME_MS",
    "PRODUCER_ID",
    "AccountSpec",
    "Chain",
    "genesis_document",
    "key_pair",
    "sign_envelope",
    "signed",
]

CHAIN_ID: Final = "weall-dev"
GENESIS_TIME_MS: Final = 1_700_000_000_000
BLOCK_MS: Final = 1000
PRODUCER_ID: Final = "@node"
# A well-formed CIDv1 in base32 (the CID of the empty raw block).
CID: Final = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def key_pair(account_id: str) -> KeyPair:
    """Return the deterministic key pair of ``account_id`` (``"@alice"``)."""
    seed = hashlib.sha256(b"weall-tests/" + account_id.encode("utf-8")).digest()
    return from_seed(seed, account_id)


@dataclass(frozen=True)
class AccountSpec:
    """A bootstrap account of a test genesis, whose key is ``key_pair(id)``."""

    id: str
    tier: int = 2
    roles: tuple[str, ...] = ()
    balance: int = 0

    def entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pubkey": key_pair(self.id).pubkey,
            "poh_tier": self.tier,
            "roles": list(self.roles),
            "balance": self.balance,
        }


# The producer account "@node" is always added by ``genesis_document``.
DEFAULT_ACCOUNTS: Final[tuple[AccountSpec, ...]] = (
    AccountSpec("@founder", 2, ("juror",), 1_000_000),
    AccountSpec("@alice", 2, (), 1000),
    AccountSpec("@bob", 2),
    AccountSpec("@carol", 1, (), 100),
    AccountSpec("@dave", 0),
)


def genesis_document(
    accounts: Iterable[AccountSpec] = DEFAULT_ACCOUNTS,
    *,
    params: dict[str, Any] | None = None,
    chain_id: str = CHAIN_ID,
    genesis_time_ms: int = GENESIS_TIME_MS,
) -> dict[str, Any]:
    """Build a genesis document like the dev one.

    ``params`` is merged over ``DEV_OVERRIDES``. The producer ``@node`` (tier
    2, roles producer and node_operator) is listed first.
    """
    producer = AccountSpec(PRODUCER_ID, 2, ("node_operator", "producer"))
    return {
        "chain_id": chain_id,
        "genesis_time_ms": genesis_time_ms,
        "producer": key_pair(PRODUCER_ID).pubkey,
        "params": {**DEV_OVERRIDES, **(params or {})},
        "accounts": [producer.entry(), *(spec.entry() for spec in accounts)],
    }


def sign_envelope(
    signer: str,
    tx_type: str,
    payload: dict[str, Any],
    nonce: int,
    *,
    key: KeyPair | None = None,
    chain_id: str = CHAIN_ID,
) -> dict[str, Any]:
    """Return the wire form of a signed envelope (a dict with all seven fields).

    ``key`` defaults to ``key_pair(signer)``.
    """
    return build_envelope(
        key or key_pair(signer),
        chain_id=chain_id,
        tx_type=tx_type,
        signer=signer,
        nonce=nonce,
        payload=payload,
    )


def signed(
    signer: str,
    tx_type: str,
    payload: dict[str, Any],
    nonce: int,
    *,
    key: KeyPair | None = None,
    chain_id: str = CHAIN_ID,
) -> Envelope:
    """Sign, parse and signature-check an envelope, as the producer does."""
    env = parse_envelope(
        sign_envelope(signer, tx_type, payload, nonce, key=key, chain_id=chain_id)
    )
    env.verify_signature()
    return env


@dataclass
class Chain:
    """A single-producer chain over a ``MemoryState``, built from a test genesis.

    ``state`` is the committed state, ``head`` the tip header, ``blocks`` every
    block after block 0 together with the envelopes it included.
    """

    accounts: Sequence[AccountSpec] = DEFAULT_ACCOUNTS
    params: dict[str, Any] | None = None
    genesis_time_ms: int = GENESIS_TIME_MS
    document: dict[str, Any] = field(init=False)
    state: MemoryState = field(init=False)
    genesis: BlockResult = field(init=False)
    head: dict[str, Any] = field(init=False)
    blocks: list[tuple[BlockResult, list[Envelope]]] = field(init=False)

    def __post_init__(self) -> None:
        self.document = genesis_document(
            self.accounts, params=self.params, genesis_time_ms=self.genesis_time_ms
        )
        self.info = genesis_info(self.document)
        self.producer_key = key_pair(PRODUCER_ID)
        self.state = MemoryState()
        overlay = genesis_state(self.document, self.state)
        self.genesis = genesis_block(self.document, overlay, self.producer_key)
        self.state.apply(overlay.changes())
        self.head = self.genesis.header
        self.blocks = []

    # -- reads -----------------------------------------------------------------

    @property
    def height(self) -> int:
        return int(self.head["height"])

    @property
    def now_ms(self) -> int:
        """The default timestamp of the next block."""
        return int(self.head["timestamp_ms"]) + BLOCK_MS

    @property
    def unlock_at_ms(self) -> int:
        """The chain time at which economic types unlock."""
        return (
            self.genesis_time_ms
            + chain_params(self.state)["economics_lock_days"] * DAY_MS
        )

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.state.get(kind, key)

    def account(self, account_id: str) -> dict[str, Any]:
        """Return the committed record of ``account_id``, failing the test if it is missing."""
        record = self.state.get("account", account_id)
        assert record is not None, f"account {account_id} does not exist"
        return record

    def next_nonce(self, signer: str) -> int:
        record = self.state.get("account", signer)
        return 0 if record is None else int(record["next_nonce"])

    # -- transactions ------------------------------------------------------------

    def tx(
        self,
        signer: str,
        tx_type: str,
        payload: dict[str, Any],
        *,
        nonce: int | None = None,
        key: KeyPair | None = None,
    ) -> Envelope:
        """Sign an envelope.

        ``nonce`` defaults to 0 for ``ACCOUNT_REGISTER`` and to the signer's
        committed next nonce for every other type.
        """
        if nonce is None:
            nonce = 0 if tx_type == "ACCOUNT_REGISTER" else self.next_nonce(signer)
        return signed(
            signer, tx_type, payload, nonce, key=key, chain_id=self.info.chain_id
        )

    def admit(self, env: Envelope, *, now_ms: int | None = None) -> None:
        """Run admission against the committed state, raising ``TxRejected`` on failure."""
        admit(
            self.state,
            env,
            now_ms=self.now_ms if now_ms is None else now_ms,
            height=self.height + 1,
            genesis=self.info,
        )

    def block(self, *envs: Envelope, timestamp_ms: int | None = None) -> BlockResult:
        """Build, sign and commit a block of ``envs`` without admitting them, and return it."""
        result = build_block(
            self.state,
            self.head,
            list(envs),
            timestamp_ms=self.now_ms if timestamp_ms is None else timestamp_ms,
            genesis=self.info,
            producer_pubkey=self.producer_key.pubkey,
            sign=self.producer_key.sign,
        )
        self.state.apply(result.state.changes())
        self.head = result.header
        self.blocks.append((result, list(envs)))
        return result

    def run(
        self,
        signer: str,
        tx_type: str,
        payload: dict[str, Any],
        *,
        key: KeyPair | None = None,
        timestamp_ms: int | None = None,
    ) -> dict[str, Any]:
        """Admit one transaction, commit it alone in a block, return its receipt.

        Admission runs at the block's timestamp, so an admission failure
        raises ``TxRejected`` and commits nothing.
        """
        env = self.tx(signer, tx_type, payload, key=key)
        self.admit(env, now_ms=timestamp_ms)
        (receipt,) = self.block(env, timestamp_ms=timestamp_ms).receipts
        return receipt

    def ok(
        self, signer: str, tx_type: str, payload: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        """Like ``run``, and fail the test unless the receipt is ok."""
        receipt = self.run(signer, tx_type, payload, **options)
        assert receipt["ok"], receipt
        return receipt

    def replay(self) -> list[dict[str, Any]]:
        """Rebuild every block from genesis over a fresh state and return the headers.

        The blocks are unsigned, which changes no header field.
        """
        state = MemoryState()
        overlay = genesis_state(self.document, state)
        state.apply(overlay.changes())
        head = genesis_block(self.document, overlay, self.producer_key).header
        headers = [head]
        for result, envs in self.blocks:
            rebuilt = build_block(
                state,
                head,
                envs,
                timestamp_ms=result.header["timestamp_ms"],
                genesis=self.info,
                producer_pubkey=self.producer_key.pubkey,
                sign=None,
            )
            state.apply(rebuilt.state.changes())
            head = rebuilt.header
            headers.append(head)
        return headers
