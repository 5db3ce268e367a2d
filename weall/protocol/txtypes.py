"""Transaction types: gates, roles, the economics lock, and their handlers.

``TX_TYPES`` is the single table of every type. Rules modules register their
handler with ``@handler(TYPE)``; a handler reads and writes ``ctx.state`` (a
child overlay that is discarded when the handler raises) and returns the ids
it created for the receipt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from weall.errors import TxRejected
from weall.protocol.params import DAY_MS
from weall.protocol.state import Overlay

__all__ = [
    "TX_TYPES",
    "GenesisInfo",
    "TxContext",
    "TxType",
    "economics_unlock_at_ms",
    "gate_tier",
    "handler",
]

# Roles a signer may hold. "group_admin" and "assigned" are checked by the
# handler, because they depend on the payload.
JUROR: Final = "juror"
NODE_OPERATOR: Final = "node_operator"
PRODUCER: Final = "producer"
ROLES: Final = (JUROR, NODE_OPERATOR, PRODUCER)


@dataclass(frozen=True)
class GenesisInfo:
    chain_id: str
    genesis_hash: str
    genesis_time_ms: int
    producer_pubkey: str


@dataclass
class TxContext:
    """Everything a handler may use; handlers never read clocks or files."""

    state: Overlay
    tx_type: str
    signer: str
    nonce: int
    payload: dict[str, Any]
    pubkey: str
    tx_id: str
    height: int
    timestamp_ms: int
    params: dict[str, Any]
    genesis: GenesisInfo
    admission: bool
    session_key: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def account(self) -> dict[str, Any]:
        account = self.state.get("account", self.signer)
        if account is None:
            raise TxRejected("unknown_signer", f"account {self.signer} does not exist")
        return account


Handler = Callable[[TxContext], dict[str, Any]]


@dataclass
class TxType:
    """One row of the type table.

    Attributes:
        name: the ``tx_type`` string.
        tier: default minimum PoH tier of the signer, ``None`` for no gate.
        role: a role the signer must hold, if any.
        producer_alternative: the producer account passes the gate instead.
        economic: locked until the economics unlock time.
        session_allowed: a session key may sign it when in scope.
        handler: the payload rules; set by the rules modules.
    """

    name: str
    tier: int | None
    role: str | None = None
    producer_alternative: bool = False
    economic: bool = False
    session_allowed: bool = True
    handler: Handler | None = None


def _types(*rows: TxType) -> dict[str, TxType]:
    return {row.name: row for row in rows}


TX_TYPES: Final[dict[str, TxType]] = _types(
    TxType("ACCOUNT_REGISTER", None, session_allowed=False),
    TxType("ACCOUNT_KEY_ADD", 0, session_allowed=False),
    TxType("ACCOUNT_KEY_REVOKE", 0, session_allowed=False),
    TxType("ACCOUNT_SESSION_KEY_ISSUE", 0, session_allowed=False),
    TxType("ACCOUNT_SESSION_KEY_REVOKE", 0),
    TxType("PROFILE_UPDATE", 0),
    TxType("POH_ASYNC_REQUEST_OPEN", 0),
    TxType("POH_REVIEW_SUBMIT", 0, role=JUROR),
    TxType("POH_LIVE_REQUEST_OPEN", 1),
    TxType("POH_LIVE_VERDICT_SUBMIT", 0, role=JUROR),
    TxType("ROLE_JUROR_ENROLL", 2),
    TxType("FOLLOW_SET", 1),
    TxType("CONTENT_POST_CREATE", 2),
    TxType("CONTENT_POST_EDIT", 2),
    TxType("CONTENT_POST_DELETE", 2),
    TxType("CONTENT_COMMENT_CREATE", 2),
    TxType("CONTENT_COMMENT_DELETE", 2),
    TxType("CONTENT_REACTION_SET", 2),
    TxType("CONTENT_FLAG", 2),
    TxType("GROUP_CREATE", 2),
    TxType("GROUP_MEMBERSHIP_REQUEST", 1),
    TxType("GROUP_MEMBERSHIP_DECIDE", 0),
    TxType("GOV_PROPOSAL_CREATE", 2),
    TxType("GOV_VOTE_CAST", 2),
    TxType("DISPUTE_OPEN", 2),
    TxType("DISPUTE_VOTE_SUBMIT", 0, role=JUROR),
    TxType("STORAGE_OPERATOR_ENROLL", 2),
    TxType("STORAGE_OPERATOR_WITHDRAW", 0, role=NODE_OPERATOR),
    TxType("IPFS_PIN_REQUEST", 1, producer_alternative=True),
    TxType("IPFS_PIN_CONFIRM", 0, role=NODE_OPERATOR),
    TxType("IPFS_PIN_HEAL", None, role=PRODUCER),
    TxType("BALANCE_TRANSFER", 1, economic=True),
    TxType("TREASURY_SPEND_PROPOSE", 2, economic=True),
    TxType("REWARD_CLAIM", 1, economic=True),
)


def handler(name: str) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        row = TX_TYPES[name]
        if row.handler is not None:
            raise RuntimeError(f"two handlers registered for {name}")
        row.handler = function
        return function

    return register


def gate_tier(params: dict[str, Any], name: str) -> int | None:
    """The PoH tier a signer needs for ``name``: ``params.gates`` overrides the default."""
    override = params.get("gates", {}).get(name)
    return TX_TYPES[name].tier if override is None else int(override)


def economics_unlock_at_ms(genesis: GenesisInfo, params: dict[str, Any]) -> int:
    return genesis.genesis_time_ms + int(params["economics_lock_days"]) * DAY_MS
