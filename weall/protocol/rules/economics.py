"""Balance transfers, treasury spend proposals and rewards.

All three are economic types: the gate rejects them as ``economics_locked``
until ``genesis_time_ms + economics_lock_days`` of chain time, so these
handlers run only after the unlock, against the balances genesis allocated.
"""

from __future__ import annotations

from typing import Any

from weall.errors import TxRejected
from weall.protocol.rules._payload import (
    expect_fields,
    get_account_id,
    get_int,
    get_text,
    not_found,
)
from weall.protocol.txtypes import TxContext, handler

__all__ = ["TREASURY_ACCOUNT"]

MAX_AMOUNT = 2**53 - 1
TREASURY_ACCOUNT = "@treasury"


@handler("BALANCE_TRANSFER")
def transfer(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"to", "amount"})
    to = get_account_id(ctx.payload, "to")
    amount = get_int(ctx.payload, "amount", 1, MAX_AMOUNT)
    if to == ctx.signer:
        raise TxRejected("invalid_payload", "cannot transfer to the same account")
    sender = ctx.account()
    receiver = ctx.state.get("account", to)
    if receiver is None:
        raise not_found("account", to)
    if sender["balance"] < amount:
        raise TxRejected(
            "insufficient_balance",
            f"balance {sender['balance']} is below {amount}",
            {"balance": sender["balance"]},
        )
    sender["balance"] -= amount
    receiver["balance"] += amount
    ctx.state.put("account", ctx.signer, sender)
    ctx.state.put("account", to, receiver)
    return {}


@handler("TREASURY_SPEND_PROPOSE")
def treasury_spend(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"to", "amount", "memo"})
    to = get_account_id(ctx.payload, "to")
    amount = get_int(ctx.payload, "amount", 1, MAX_AMOUNT)
    memo = get_text(ctx.payload, "memo", 500, allow_empty=True)
    if ctx.state.get("account", to) is None:
        raise not_found("account", to)
    treasury = ctx.state.get("account", TREASURY_ACCOUNT)
    available = 0 if treasury is None else treasury["balance"]
    if amount > available:
        raise TxRejected(
            "insufficient_balance",
            f"treasury balance {available} is below {amount}",
            {"balance": available},
        )
    ctx.state.put(
        "treasury_proposal",
        ctx.tx_id,
        {
            "id": ctx.tx_id,
            "proposer": ctx.signer,
            "to": to,
            "amount": amount,
            "memo": memo,
            "height": ctx.height,
            "status": "open",
        },
    )
    return {"proposal_id": ctx.tx_id}


@handler("REWARD_CLAIM")
def reward_claim(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, set())
    account = ctx.account()
    interval = ctx.params["reward_interval_blocks"]
    last = account.get("last_reward_height")
    if last is not None and ctx.height - last < interval:
        raise TxRejected(
            "conflict",
            f"a reward may be claimed once every {interval} blocks",
            {"next_claim_height": last + interval},
        )
    amount = ctx.params["reward_amount"]
    account["balance"] += amount
    account["last_reward_height"] = ctx.height
    ctx.state.put("account", ctx.signer, account)
    return {"amount": amount}
