"""Accounts, keys, session keys and profiles.

A key revoked from an account never comes back to it: ``ACCOUNT_KEY_ADD``
and ``ACCOUNT_SESSION_KEY_ISSUE`` reject a public key that the account
revoked before, as an account key or as a session key, with ``key_revoked``.

State kinds:
    ``key_revoked`` (key ``"{account_id}/{pubkey}"``): ``{"height"}`` of an
    account key's revocation.
    ``session_revoked`` (key ``"{account_id}/{pubkey}"``): ``{"height"}`` of a
    session key's revocation; session-gated HTTP routes read it too.

An account record keeps its expired session keys in ``expired_session_keys``
(``{"pubkey", "expires_at_ms"}``, oldest first, at most ``max_session_keys``
of them) once an issue drops them from ``session_keys``. A request signed by
one of them is then still rejected as expired, not as signed by an unknown key.
"""

from __future__ import annotations

from typing import Any

from weall.errors import EncodingError, TxRejected
from weall.protocol.encoding import decode_pubkey
from weall.protocol.rules._payload import (
    bump_counter,
    expect_fields,
    get_cid,
    get_int,
    get_text,
    invalid,
)
from weall.protocol.txtypes import TX_TYPES, TxContext, handler

__all__ = ["new_account"]


def new_account(
    account_id: str,
    pubkey: str,
    *,
    tier: int = 0,
    roles: list[str] | None = None,
    balance: int = 0,
    height: int = 0,
) -> dict[str, Any]:
    return {
        "id": account_id,
        "keys": [pubkey],
        "session_keys": [],
        "poh_tier": tier,
        "roles": sorted(roles or []),
        "next_nonce": 1,
        "balance": balance,
        "profile": {},
        "counts": {"posts": 0, "comments": 0, "followers": 0, "following": 0},
        "created_height": height,
    }


def _pubkey(payload: dict[str, Any]) -> str:
    value = payload.get("pubkey")
    try:
        decode_pubkey(value, code="invalid_payload")
    except EncodingError as exc:
        raise invalid(exc.message) from None
    return str(value)


def _all_keys(account: dict[str, Any]) -> set[str]:
    return set(account["keys"]) | {s["pubkey"] for s in account["session_keys"]}


def _check_not_revoked(ctx: TxContext, pubkey: str) -> None:
    """Raise ``key_revoked`` when the signer revoked ``pubkey`` before, in either role."""
    key = f"{ctx.signer}/{pubkey}"
    record = ctx.state.get("key_revoked", key) or ctx.state.get("session_revoked", key)
    if record is not None:
        raise TxRejected(
            "key_revoked",
            f"pubkey was revoked from {ctx.signer} at height {record['height']} "
            "and cannot be added again; use a new key",
            {"pubkey": pubkey, "revoked_height": record["height"]},
        )


@handler("ACCOUNT_REGISTER")
def register(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, set())
    if ctx.state.get("account", ctx.signer) is not None:
        raise TxRejected("account_exists", f"account {ctx.signer} already exists")
    ctx.state.put(
        "account", ctx.signer, new_account(ctx.signer, ctx.pubkey, height=ctx.height)
    )
    bump_counter(ctx.state, "accounts")
    return {"account": ctx.signer}


@handler("ACCOUNT_KEY_ADD")
def key_add(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"pubkey"})
    pubkey = _pubkey(ctx.payload)
    account = ctx.account()
    if pubkey in _all_keys(account):
        raise TxRejected("conflict", "pubkey is already a key of this account")
    _check_not_revoked(ctx, pubkey)
    if len(account["keys"]) >= ctx.params["max_keys"]:
        raise invalid(f"an account has at most {ctx.params['max_keys']} active keys")
    account["keys"].append(pubkey)
    ctx.state.put("account", ctx.signer, account)
    return {}


@handler("ACCOUNT_KEY_REVOKE")
def key_revoke(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"pubkey"})
    pubkey = _pubkey(ctx.payload)
    account = ctx.account()
    if pubkey not in account["keys"]:
        raise TxRejected("not_found", "pubkey is not an active key of this account")
    if len(account["keys"]) == 1:
        raise invalid("the last active key cannot be revoked")
    account["keys"].remove(pubkey)
    ctx.state.put("account", ctx.signer, account)
    ctx.state.put("key_revoked", f"{ctx.signer}/{pubkey}", {"height": ctx.height})
    return {}


@handler("ACCOUNT_SESSION_KEY_ISSUE")
def session_issue(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"pubkey", "scope", "expires_at_ms"})
    if ctx.session_key is not None:
        raise TxRejected("key_not_allowed", "a session key cannot issue a session key")
    pubkey = _pubkey(ctx.payload)
    scope = ctx.payload["scope"]
    if not isinstance(scope, list) or not 1 <= len(scope) <= len(TX_TYPES):
        raise invalid("scope must be a non-empty list of tx types")
    for tx_type in scope:
        if tx_type not in TX_TYPES:
            raise invalid(f"scope: unknown tx type {str(tx_type)[:64]!r}")
        if not TX_TYPES[tx_type].session_allowed:
            raise invalid(f"scope: {tx_type} can only be signed by an account key")
    if len(set(scope)) != len(scope):
        raise invalid("scope lists a type twice")
    max_ttl = ctx.params["session_max_ttl_ms"]
    expires = get_int(ctx.payload, "expires_at_ms", 0, 2**53 - 1)
    if expires <= ctx.timestamp_ms:
        raise invalid("expires_at_ms is in the past")
    if expires > ctx.timestamp_ms + max_ttl:
        raise invalid(
            f"expires_at_ms is more than session_max_ttl_ms ({max_ttl}) ahead"
        )
    account = ctx.account()
    if pubkey in _all_keys(account):
        raise TxRejected("conflict", "pubkey is already a key of this account")
    _check_not_revoked(ctx, pubkey)
    limit = ctx.params["max_session_keys"]
    live = [s for s in account["session_keys"] if s["expires_at_ms"] > ctx.timestamp_ms]
    if len(live) >= limit:
        raise invalid(f"an account has at most {limit} session keys")
    _move_expired(account, live, pubkey, limit)
    live.append({"pubkey": pubkey, "scope": sorted(scope), "expires_at_ms": expires})
    account["session_keys"] = live
    ctx.state.put("account", ctx.signer, account)
    return {}


def _move_expired(
    account: dict[str, Any], live: list[dict[str, Any]], issued: str, limit: int
) -> None:
    """Move the expired session keys to ``expired_session_keys``, keeping ``limit``.

    Both lists stay bounded by ``max_session_keys``. A key issued again after
    it expired leaves the expired list.
    """
    live_keys = {s["pubkey"] for s in live}
    expired = [
        {"pubkey": s["pubkey"], "expires_at_ms": s["expires_at_ms"]}
        for s in account["session_keys"]
        if s["pubkey"] not in live_keys
    ]
    remembered = [
        e
        for e in [*account.get("expired_session_keys", []), *expired]
        if e["pubkey"] != issued
    ][-limit:]
    if remembered or "expired_session_keys" in account:
        account["expired_session_keys"] = remembered


@handler("ACCOUNT_SESSION_KEY_REVOKE")
def session_revoke(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"pubkey"})
    pubkey = _pubkey(ctx.payload)
    account = ctx.account()
    remaining = [s for s in account["session_keys"] if s["pubkey"] != pubkey]
    expired = account.get("expired_session_keys", [])
    remaining_expired = [e for e in expired if e["pubkey"] != pubkey]
    listed = len(remaining) < len(account["session_keys"])
    remembered = len(remaining_expired) < len(expired)
    if not listed and not remembered:
        raise TxRejected("not_found", "pubkey is not a session key of this account")
    account["session_keys"] = remaining
    if expired:
        # Revoking an expired key makes sure that it can never be issued again.
        account["expired_session_keys"] = remaining_expired
    ctx.state.put("account", ctx.signer, account)
    # Kept so that a request signed by a revoked key can be told apart from
    # one signed by a key that was never issued.
    ctx.state.put("session_revoked", f"{ctx.signer}/{pubkey}", {"height": ctx.height})
    return {}


@handler("PROFILE_UPDATE")
def profile_update(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, set(), {"display_name", "bio", "avatar_cid"})
    if not ctx.payload:
        raise invalid("payload sets no field")
    account = ctx.account()
    profile = account["profile"]
    if "display_name" in ctx.payload:
        profile["display_name"] = get_text(
            ctx.payload, "display_name", ctx.params["max_display_name_chars"]
        )
    if "bio" in ctx.payload:
        profile["bio"] = get_text(
            ctx.payload, "bio", ctx.params["max_bio_chars"], allow_empty=True
        )
    if "avatar_cid" in ctx.payload:
        value = ctx.payload["avatar_cid"]
        profile["avatar_cid"] = None if value is None else get_cid(value, "avatar_cid")
    ctx.state.put("account", ctx.signer, account)
    return {}
