"""Genesis documents: their shape, their hash, and the state they create.

A genesis document holds ``chain_id``, ``genesis_time_ms``, ``producer`` (the
producer's public key), ``params`` and ``accounts`` (each with ``id``,
``pubkey``, ``poh_tier``, ``roles`` and ``balance``). Its hash, over the
canonical JSON, is the chain's identity.
"""

from __future__ import annotations

from typing import Any, Final

from weall.errors import ProtocolError
from weall.protocol import canonical
from weall.protocol.encoding import decode_pubkey, hash_bytes, is_account_id
from weall.protocol.params import merge_params
from weall.protocol.rules.accounts import new_account
from weall.protocol.state import Overlay, StateReader
from weall.protocol.txtypes import PRODUCER, ROLES, GenesisInfo

__all__ = [
    "GENESIS_FIELDS",
    "genesis_hash",
    "genesis_info",
    "genesis_state",
    "validate_genesis",
]

GENESIS_FIELDS: Final = frozenset(
    {"chain_id", "genesis_time_ms", "producer", "params", "accounts"}
)
MAX_BOOTSTRAP_ACCOUNTS: Final = 10_000


def _invalid(message: str) -> ProtocolError:
    return ProtocolError("invalid_genesis", message)


def genesis_hash(document: dict[str, Any]) -> str:
    return hash_bytes(canonical.dumps(document))


def validate_genesis(document: Any) -> dict[str, Any]:
    """Check a genesis document; return its params merged over the defaults."""
    if not isinstance(document, dict) or set(document) != GENESIS_FIELDS:
        raise _invalid(
            f"a genesis document has exactly the fields {sorted(GENESIS_FIELDS)}"
        )
    canonical.check_value(document)
    chain_id = document["chain_id"]
    if not isinstance(chain_id, str) or not 1 <= len(chain_id) <= 64:
        raise _invalid("chain_id must be a string of 1 to 64 characters")
    time_ms = document["genesis_time_ms"]
    if isinstance(time_ms, bool) or not isinstance(time_ms, int) or time_ms < 0:
        raise _invalid("genesis_time_ms must be a non-negative integer")
    decode_pubkey(document["producer"], code="invalid_genesis")
    if not isinstance(document["params"], dict):
        raise _invalid("params must be an object")
    params = merge_params(document["params"])
    accounts = document["accounts"]
    if (
        not isinstance(accounts, list)
        or not 1 <= len(accounts) <= MAX_BOOTSTRAP_ACCOUNTS
    ):
        raise _invalid(f"accounts must list 1 to {MAX_BOOTSTRAP_ACCOUNTS} accounts")
    seen: set[str] = set()
    producers = []
    for account in accounts:
        _check_account(account, seen)
        if PRODUCER in account["roles"]:
            producers.append(account)
    if len(producers) != 1 or producers[0]["pubkey"] != document["producer"]:
        raise _invalid(
            "exactly one account has role producer, with the producer's pubkey"
        )
    return params


def _check_account(account: Any, seen: set[str]) -> None:
    fields = {"id", "pubkey", "poh_tier", "roles", "balance"}
    if not isinstance(account, dict) or set(account) != fields:
        raise _invalid(f"each account has exactly the fields {sorted(fields)}")
    if not is_account_id(account["id"]) or account["id"] in seen:
        raise _invalid(f"account id {account['id']!r} is invalid or listed twice")
    seen.add(account["id"])
    decode_pubkey(account["pubkey"], code="invalid_genesis")
    if account["poh_tier"] not in (0, 1, 2) or isinstance(account["poh_tier"], bool):
        raise _invalid(f"{account['id']}: poh_tier must be 0, 1 or 2")
    roles = account["roles"]
    if (
        not isinstance(roles, list)
        or not set(roles) <= set(ROLES)
        or len(set(roles)) != len(roles)
    ):
        raise _invalid(
            f"{account['id']}: roles must be distinct names from {list(ROLES)}"
        )
    balance = account["balance"]
    if isinstance(balance, bool) or not isinstance(balance, int) or balance < 0:
        raise _invalid(f"{account['id']}: balance must be a non-negative integer")


def genesis_info(document: dict[str, Any]) -> GenesisInfo:
    return GenesisInfo(
        chain_id=document["chain_id"],
        genesis_hash=genesis_hash(document),
        genesis_time_ms=document["genesis_time_ms"],
        producer_pubkey=document["producer"],
    )


def genesis_state(document: dict[str, Any], base: StateReader) -> Overlay:
    """The entries of the state at height 0, as an overlay over an empty ``base``."""
    params = validate_genesis(document)
    info = genesis_info(document)
    state = Overlay(base)
    state.put("chain", "params", params)
    state.put(
        "chain",
        "genesis",
        {
            "chain_id": info.chain_id,
            "genesis_hash": info.genesis_hash,
            "genesis_time_ms": info.genesis_time_ms,
            "producer": info.producer_pubkey,
        },
    )
    for entry in document["accounts"]:
        account = new_account(
            entry["id"],
            entry["pubkey"],
            tier=entry["poh_tier"],
            roles=entry["roles"],
            balance=entry["balance"],
        )
        state.put("account", entry["id"], account)
        for role in entry["roles"]:
            state.put("role", f"{role}/{entry['id']}", {"since_height": 0})
    state.put("counter", "accounts", {"n": len(document["accounts"])})
    return state
