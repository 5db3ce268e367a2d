"""Pydantic models of the HTTP API's request and response bodies.

They document the API in ``/openapi.json`` through quart-schema. The routes
build their JSON from ``weall.api.views`` and do not pass it through these
models, so a test (a schemathesis run against a live node) checks that every
response matches them. Request bodies are documented here too, but the
transaction routes parse them with ``canonical.loads_strict``, never with
pydantic, because a lenient parser could read a different document than the
one that was signed.

Documents whose fields are fixed by the protocol forbid extra fields. State
records (posts, groups, proposals, disputes, PoH requests) allow them,
because their fields grow over their lifecycle (``deleted_at_ms``,
``closed_height``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

__all__ = [
    "Account",
    "BatchRequest",
    "BatchResult",
    "Block",
    "BlocksPage",
    "BlocksQuery",
    "ChainHead",
    "ContentView",
    "Dispute",
    "Envelope",
    "ErrorBody",
    "FeedPage",
    "Group",
    "GroupQuery",
    "Health",
    "PageQuery",
    "PinStatus",
    "PohRequest",
    "Proposal",
    "Readiness",
    "RetryAfterHeader",
    "Snapshot",
    "TxAccepted",
    "TxDuplicate",
    "TxStatus",
]

MAX_SAFE_INT = 2**53 - 1

Hash = Annotated[
    str, Field(pattern=r"^b[a-z2-7]{52}$", description="multibase base32 SHA-256")
]
AccountId = Annotated[str, Field(pattern=r"^@[a-z0-9_]{3,32}$")]
PublicKey = Annotated[
    str,
    Field(
        pattern=r"^z6Mk[1-9A-HJ-NP-Za-km-z]+$",
        description="did:key form of an Ed25519 key",
    ),
]
Signature = Annotated[
    str,
    Field(
        pattern=r"^u[A-Za-z0-9_-]{86}$",
        description="multibase base64url Ed25519 signature",
    ),
]
SafeInt = Annotated[int, Field(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]


class _Fixed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- errors -------------------------------------------------------------------


class ErrorDetail(_Fixed):
    code: str = Field(description="stable error code, for example nonce_conflict")
    message: str
    details: dict[str, Any]


class ErrorBody(_Fixed):
    """Error body: ``error.code`` is the stable reason the request failed."""

    ok: Literal[False]
    error: ErrorDetail


class RetryAfterHeader(_Fixed):
    retry_after: int = Field(description="seconds until the client may retry")


# -- transactions -------------------------------------------------------------


class Envelope(_Fixed):
    """A signed transaction envelope: exactly these seven fields."""

    chain_id: str = Field(min_length=1, max_length=64)
    tx_type: str = Field(min_length=1, max_length=64)
    signer: AccountId
    nonce: Count
    payload: dict[str, Any]
    pubkey: PublicKey
    sig: Signature


class BatchRequest(_Fixed):
    envelopes: list[Envelope] = Field(min_length=1, max_length=1000)


class TxAccepted(_Fixed):
    """Accepted: the transaction is stored and pending."""

    ok: Literal[True]
    tx_id: Hash
    status: Literal["pending"]


class TxDuplicate(_Fixed):
    """Duplicate: the node already has this transaction; its current status."""

    ok: Literal[True]
    tx_id: Hash
    status: Literal["pending", "committed", "rejected", "expired"]
    duplicate: Literal[True]
    height: Count | None = None


class BatchItem(_Fixed):
    ok: bool
    http_status: int = Field(ge=100, le=599)
    tx_id: Hash | None = None
    status: Literal["pending", "committed", "rejected", "expired"] | None = None
    duplicate: bool | None = None
    height: Count | None = None
    error: ErrorDetail | None = None


class BatchResult(_Fixed):
    """One result per envelope, in request order."""

    ok: Literal[True]
    results: list[BatchItem]


class Receipt(_Record):
    """The outcome of an included transaction, with the ids it created."""

    ok: bool
    code: str | None = None
    message: str | None = None
    details: dict[str, Any] | None = None


class TxStatus(_Fixed):
    """The status of a transaction the node has seen."""

    tx_id: Hash
    status: Literal["pending", "committed", "rejected", "expired"]
    tx_type: str
    signer: AccountId
    nonce: Count
    height: Count | None = None
    receipt: Receipt | None = None


# -- chain --------------------------------------------------------------------


class ChainHead(_Fixed):
    """The tip of the chain."""

    height: Count
    hash: Hash
    timestamp_ms: Count
    state_root: Hash


class BlockHeader(_Fixed):
    chain_id: str
    height: Count
    prev_hash: Hash
    timestamp_ms: Count
    producer: PublicKey
    tx_ids: list[Hash]
    receipts_hash: Hash
    state_root: Hash


class BlockTx(_Fixed):
    tx_id: Hash
    envelope: dict[str, Any]
    receipt: Receipt


class Block(_Fixed):
    """A committed block with its transactions and receipts."""

    height: Count
    hash: Hash
    header: BlockHeader
    sig: Signature
    txs: list[BlockTx]


class BlocksPage(_Fixed):
    """Blocks from a height on; ``next_from`` continues the listing."""

    blocks: list[Block]
    next_from: Count | None
    head_height: Count | None


class BlocksQuery(_Fixed):
    from_: Count = Field(default=0, alias="from", description="first height")
    limit: int = Field(default=20, ge=1, le=100)


# -- accounts and content -------------------------------------------------------


class SessionKey(_Fixed):
    pubkey: PublicKey
    scope: list[str]
    expires_at_ms: Count


class Profile(_Fixed):
    display_name: str | None = None
    bio: str | None = None
    avatar_cid: str | None = None


class Account(_Fixed):
    """The public record of an account, with public keys only."""

    id: AccountId
    keys: list[PublicKey]
    session_keys: list[SessionKey]
    poh_tier: int = Field(ge=0, le=2)
    roles: list[str]
    next_nonce: Count
    balance: Count
    counts: dict[str, Count]
    profile: Profile
    created_height: Count


class Post(_Record):
    id: Hash
    kind: Literal["post"]
    author: AccountId
    body: str
    media: list[str]
    group_id: str | None
    height: Count
    timestamp_ms: Count
    edited_at_ms: Count | None
    deleted: bool
    hidden: bool
    status: Literal["visible"]
    comment_count: Count
    reactions: dict[str, Count]
    flag_count: Count


class Comment(_Record):
    id: Hash
    kind: Literal["comment"]
    author: AccountId
    parent_id: Hash
    post_id: Hash
    body: str
    height: Count
    timestamp_ms: Count
    deleted: bool
    hidden: bool
    status: Literal["visible"]
    reactions: dict[str, Count]
    flag_count: Count


class RedactedContent(_Fixed):
    """A hidden or deleted post or comment: its author and links, never its body."""

    id: Hash
    kind: Literal["post", "comment"]
    author: AccountId
    status: Literal["hidden", "deleted"]
    deleted: bool
    hidden: bool
    height: Count
    timestamp_ms: Count
    parent_id: Hash | None = None
    post_id: Hash | None = None
    group_id: str | None = None


class PostWithComments(Post):
    """A visible post with a page of its visible comments."""

    comments: list[Comment]
    next_cursor: str | None


class ContentView(RootModel[PostWithComments | Comment | RedactedContent]):
    """A post with a page of its comments, a comment, or a redacted one."""


class FeedPage(_Fixed):
    """A page of posts, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[Post]
    next_cursor: str | None


class PageQuery(_Fixed):
    cursor: str = Field(
        default="",
        max_length=200,
        pattern=r"^[A-Za-z0-9._@/-]*$",
        description="the next_cursor of the previous page",
    )
    limit: int = Field(default=20, ge=1, le=100)


class GroupQuery(_Fixed):
    limit: int = Field(default=100, ge=1, le=1000)


# -- state records --------------------------------------------------------------


class Group(_Record):
    """A group with its members and pending membership requests."""

    id: str
    name: str
    policy: Literal["open", "approval"]
    creator: AccountId
    admins: list[AccountId]
    member_count: Count
    height: Count
    members: list[AccountId]
    pending_requests: list[AccountId]


class Proposal(_Record):
    """A governance proposal and its tally."""

    id: Hash
    proposer: AccountId
    title: str
    body: str
    action: dict[str, Any] | None
    height: Count
    voting_blocks: Count
    close_height: Count
    tally: dict[str, Count]
    status: str
    outcome: dict[str, Any] | None


class Dispute(_Record):
    """A dispute over a post or comment and its jurors' votes."""

    id: Hash
    target_id: Hash
    target_kind: str
    target_author: AccountId
    opener: AccountId
    reason: str
    jurors: list[AccountId]
    votes: dict[str, Any]
    tally: dict[str, Count]
    status: str
    height: Count
    expires_at_height: Count
    closed_height: Count | None


class PohRequest(_Record):
    """A proof-of-humanity request and its jurors' verdicts."""

    id: Hash
    type: Literal["async", "live"]
    applicant: AccountId
    jurors: list[AccountId]
    threshold: Count
    verdicts: dict[str, Any]
    approvals: Count
    status: str
    height: Count
    expires_at_height: Count
    closed_height: Count | None


class PinTarget(_Record):
    operator: AccountId
    assigned_height: Count
    confirmation: dict[str, Any] | None
    state: str


class PinStatus(_Fixed):
    """The replication status of a pin."""

    pin_id: Hash
    cid: str
    size_bytes: Count
    owner: AccountId
    replication_factor: Count
    targets: list[PinTarget]
    confirmations: Count
    shortfall: bool
    durable: bool


# -- node -------------------------------------------------------------------------


class StorageSettings(_Fixed):
    journal_mode: str
    synchronous: str
    source: Literal["producer", "follower", "config"] = Field(
        description="where the two settings come from: the actor that writes the "
        "database, or this process's configuration when that actor did not answer"
    )
    db_path: str = Field(description="the database file's name, without its directory")
    storage_full: bool | None = Field(
        description="whether the writer paused block production because the disk is "
        "full (writes then get 503 storage_full, reads go on); null when it did not answer"
    )
    recent_state_entries: int | None = Field(
        description="an upper bound of the state changes of recent blocks not yet "
        "folded into the state table; null when the writer did not answer"
    )


class Health(_Fixed):
    """Liveness and a summary of the node."""

    ok: bool
    version: str
    chain_id: str
    mode: Literal["dev", "genesis"]
    height: Count | None
    tip: Hash | None
    actors: dict[str, str | None]
    storage: StorageSettings
    follower: dict[str, Any] | None = Field(
        default=None,
        description="on a follower node only: its sync state, as `weall status` shows it",
    )


class Readiness(_Fixed):
    """Whether every actor is running."""

    ok: bool
    actors: dict[str, str | None]


class Economics(_Fixed):
    locked: bool
    unlock_at_ms: Count | None


class Snapshot(_Fixed):
    """A bounded summary of chain and state, built from public records only."""

    chain_id: str
    genesis_hash: Hash
    height: Count | None
    tip_hash: Hash | None
    state_root: Hash | None
    counts: dict[str, Count]
    params: dict[str, Any]
    economics: Economics
