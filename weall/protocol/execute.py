"""Admission and application of transactions against the state.

``admit`` runs every admission check of a parsed, signature-checked envelope
against the committed state, in the protocol's order: signer exists, key is
allowed, nonce window, PoH gate, role gate, economics lock, then the type's
own payload rules (run against a throwaway overlay). ``apply_tx`` applies an
admitted transaction inside a block: the nonce is consumed even when the
type's rules fail, and the failure becomes an ``ok: false`` receipt.
"""

from __future__ import annotations

from typing import Any, Final

from weall.errors import ProtocolError, TxRejected
from weall.protocol.envelope import Envelope
from weall.protocol.state import Overlay, StateReader
from weall.protocol.txtypes import (
    PRODUCER,
    TX_TYPES,
    GenesisInfo,
    TxContext,
    economics_unlock_at_ms,
    gate_tier,
)

__all__ = ["NONCE_WINDOW", "admit", "apply_tx", "chain_params", "find_key"]

# Nonces from the account's next nonce up to next + 63 are admitted.
NONCE_WINDOW: Final = 64


def chain_params(state: StateReader) -> dict[str, Any]:
    params = state.get("chain", "params")
    if params is None:
        raise RuntimeError("state has no chain params; the genesis was never applied")
    return params


def find_key(
    account: dict[str, Any], pubkey: str, tx_type: str, now_ms: int
) -> dict[str, Any] | None:
    """Check that ``pubkey`` may sign ``tx_type`` for ``account``.

    Returns the session key record when a session key signs, ``None`` for an
    account key.

    Raises:
        TxRejected: ``key_not_allowed``.
    """
    if pubkey in account["keys"]:
        return None
    for session in account.get("session_keys", []):
        if session["pubkey"] != pubkey:
            continue
        if not TX_TYPES[tx_type].session_allowed:
            raise TxRejected("key_not_allowed", f"a session key may not sign {tx_type}")
        if tx_type not in session["scope"]:
            raise TxRejected(
                "key_not_allowed", f"session key scope does not include {tx_type}"
            )
        if now_ms >= session["expires_at_ms"]:
            raise TxRejected(
                "key_not_allowed",
                "session key expired",
                {"expires_at_ms": session["expires_at_ms"]},
            )
        found: dict[str, Any] = session
        return found
    for expired in account.get("expired_session_keys", []):
        if expired["pubkey"] == pubkey:
            raise TxRejected(
                "key_not_allowed",
                "session key expired",
                {"expires_at_ms": expired["expires_at_ms"]},
            )
    raise TxRejected(
        "key_not_allowed", f"pubkey is not an active key of {account['id']}"
    )


def _check_gates(
    env: Envelope,
    account: dict[str, Any],
    params: dict[str, Any],
    genesis: GenesisInfo,
    now_ms: int,
) -> None:
    row = TX_TYPES[env.tx_type]
    roles = account.get("roles", [])
    is_producer = PRODUCER in roles
    tier = gate_tier(params, env.tx_type)
    if (
        tier is not None
        and account["poh_tier"] < tier
        and not (row.producer_alternative and is_producer)
    ):
        raise TxRejected(
            "tier_required",
            f"{env.tx_type} needs PoH tier {tier}; {account['id']} has tier {account['poh_tier']}",
            {"required_tier": tier, "tier": account["poh_tier"]},
        )
    if row.role is not None and row.role not in roles:
        raise TxRejected(
            "role_required",
            f"{env.tx_type} needs role {row.role}",
            {"required_role": row.role},
        )
    if row.economic:
        unlock_at = economics_unlock_at_ms(genesis, params)
        if now_ms < unlock_at:
            raise TxRejected(
                "economics_locked",
                f"{env.tx_type} is locked until {unlock_at} ms",
                {"unlock_at_ms": unlock_at},
            )


def _context(
    state: Overlay,
    env: Envelope,
    *,
    height: int,
    timestamp_ms: int,
    params: dict[str, Any],
    genesis: GenesisInfo,
    admission: bool,
    session: dict[str, Any] | None,
) -> TxContext:
    return TxContext(
        state=state,
        tx_type=env.tx_type,
        signer=env.signer,
        nonce=env.nonce,
        payload=env.payload,
        pubkey=env.pubkey,
        tx_id=env.tx_id,
        height=height,
        timestamp_ms=timestamp_ms,
        params=params,
        genesis=genesis,
        admission=admission,
        session_key=session,
    )


def _run_handler(ctx: TxContext) -> dict[str, Any]:
    function = TX_TYPES[ctx.tx_type].handler
    if function is None:
        raise TxRejected(
            "unsupported_type",
            f"{ctx.tx_type} is not supported by this node",
            {"tx_type": ctx.tx_type},
        )
    return function(ctx)


def admit(
    state: StateReader, env: Envelope, *, now_ms: int, height: int, genesis: GenesisInfo
) -> None:
    """Run every admission check after the signature; raise ``TxRejected``.

    ``height`` is the height the transaction would be included at (tip + 1).
    """
    if env.chain_id != genesis.chain_id:
        raise TxRejected(
            "wrong_chain", f"chain_id {env.chain_id!r} is not {genesis.chain_id!r}"
        )
    params = chain_params(state)
    overlay = Overlay(state)
    session: dict[str, Any] | None = None
    if env.tx_type == "ACCOUNT_REGISTER":
        if state.get("account", env.signer) is not None:
            raise TxRejected("account_exists", f"account {env.signer} already exists")
        if env.nonce != 0:
            raise TxRejected(
                "nonce_too_high", "ACCOUNT_REGISTER has nonce 0", {"next_nonce": 0}
            )
    else:
        account = state.get("account", env.signer)
        if account is None:
            raise TxRejected("unknown_signer", f"account {env.signer} does not exist")
        session = find_key(account, env.pubkey, env.tx_type, now_ms)
        next_nonce = account["next_nonce"]
        if env.nonce < next_nonce:
            raise TxRejected(
                "nonce_too_low",
                f"nonce {env.nonce} is below the next nonce {next_nonce}",
                {"next_nonce": next_nonce},
            )
        if env.nonce >= next_nonce + NONCE_WINDOW:
            raise TxRejected(
                "nonce_too_high",
                f"nonce {env.nonce} is beyond the window {next_nonce}..{next_nonce + NONCE_WINDOW - 1}",
                {"next_nonce": next_nonce},
            )
        _check_gates(env, account, params, genesis, now_ms)
    ctx = _context(
        overlay,
        env,
        height=height,
        timestamp_ms=now_ms,
        params=params,
        genesis=genesis,
        admission=True,
        session=session,
    )
    _run_handler(ctx)


def apply_tx(
    block: Overlay,
    env: Envelope,
    *,
    height: int,
    timestamp_ms: int,
    genesis: GenesisInfo,
) -> dict[str, Any]:
    """Apply one admitted transaction to the block overlay and return its receipt.

    The caller includes transactions of a signer in nonce order, so
    ``env.nonce`` equals the account's next nonce here.
    """
    params = chain_params(block)
    child = block.child()
    session: dict[str, Any] | None = None
    try:
        if env.tx_type == "ACCOUNT_REGISTER":
            if env.nonce != 0:
                raise TxRejected("nonce_too_high", "ACCOUNT_REGISTER has nonce 0")
        else:
            account = block.get("account", env.signer)
            if account is None:
                raise TxRejected(
                    "unknown_signer", f"account {env.signer} does not exist"
                )
            if env.nonce != account["next_nonce"]:
                raise TxRejected(
                    "nonce_too_low"
                    if env.nonce < account["next_nonce"]
                    else "nonce_too_high",
                    f"nonce {env.nonce} is not the next nonce {account['next_nonce']}",
                )
            # The nonce is consumed whatever the type's rules decide.
            account["next_nonce"] += 1
            block.put("account", env.signer, account)
            session = find_key(account, env.pubkey, env.tx_type, timestamp_ms)
            _check_gates(env, account, params, genesis, timestamp_ms)
        ctx = _context(
            child,
            env,
            height=height,
            timestamp_ms=timestamp_ms,
            params=params,
            genesis=genesis,
            admission=False,
            session=session,
        )
        created = _run_handler(ctx)
    except ProtocolError as exc:
        receipt: dict[str, Any] = {
            "ok": False,
            "code": exc.code,
            "message": exc.message,
        }
        if exc.details:
            receipt["details"] = exc.details
        return receipt
    child.merge_into_parent()
    return {"ok": True, **created}
