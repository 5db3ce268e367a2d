"""Balance transfers, treasury spends and rewards.

All three are economic types: the gate rejects them as ``economics_locked``
until ``genesis_time_ms + economics_lock_days`` of chain time, so these
handlers run only after the unlock. They never create balance. Every amount
moves between accounts that genesis funded, so the sum of all balances stays
the sum that genesis allocated.

- ``REWARD_CLAIM`` pays ``reward_amount`` from the ``reward_pool_account``,
  at most once every ``reward_interval_blocks`` blocks per account, and fails
  with ``reward_pool_empty`` when the pool holds less than one reward.
- ``TREASURY_SPEND_PROPOSE`` opens a governance proposal with a
  ``treasury_spend`` action, voted with ``GOV_VOTE_CAST`` for
  ``treasury_voting_blocks`` blocks. Only when it passes with quorum does the
  close move the amount from the ``treasury_account`` (see
  ``weall.protocol.rules.governance``).
- The reward pool and the treasury cannot sign ``BALANCE_TRANSFER`` or
  claim rewards, because their balances move only by these rules.
"""

from __future__ import annotations

from typing import Any, Final

from weall.errors import TxRejected
from weall.protocol.rules._payload import (
    expect_fields,
    get_account_id,
    get_int,
    get_text,
    invalid,
    not_found,
)
from weall.protocol.rules.governance import TREASURY_SPEND, open_proposal
from weall.protocol.txtypes import TxContext, handler

__all__ = ["MAX_AMOUNT", "MAX_MEMO_CHARS", "system_accounts"]

MAX_AMOUNT: Final = 2**53 - 1
MAX_MEMO_CHARS: Final = 500


def system_accounts(params: dict[str, Any]) -> tuple[str, str]:
    """Return the ids of the reward pool and the treasury in force."""
    return str(params["reward_pool_account"]), str(params["treasury_account"])


def _reject_system_signer(ctx: TxContext) -> None:
    if ctx.signer in system_accounts(ctx.params):
        raise TxRejected(
            "forbidden",
            f"{ctx.signer} is the reward pool or the treasury, whose balance moves "
            "only by reward claims and passed treasury spends",
        )


@handler("BALANCE_TRANSFER")
def transfer(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"to", "amount"})
    to = get_account_id(ctx.payload, "to")
    amount = get_int(ctx.payload, "amount", 1, MAX_AMOUNT)
    if to == ctx.signer:
        raise invalid("cannot transfer to the same account")
    _reject_system_signer(ctx)
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
    """Open a proposal to pay ``amount`` from the treasury to ``to``.

    The treasury must hold the amount now; the close checks it again.
    """
    expect_fields(ctx.payload, {"to", "amount", "memo"})
    to = get_account_id(ctx.payload, "to")
    amount = get_int(ctx.payload, "amount", 1, MAX_AMOUNT)
    memo = get_text(ctx.payload, "memo", MAX_MEMO_CHARS, allow_empty=True)
    _, treasury_id = system_accounts(ctx.params)
    if to == treasury_id:
        raise invalid("a treasury spend cannot pay the treasury itself")
    if ctx.state.get("account", to) is None:
        raise not_found("account", to)
    treasury = ctx.state.get("account", treasury_id)
    available = 0 if treasury is None else treasury["balance"]
    if amount > available:
        raise TxRejected(
            "insufficient_balance",
            f"treasury {treasury_id} has balance {available}, below {amount}",
            {"balance": available},
        )
    action = {"type": TREASURY_SPEND, "from": treasury_id, "to": to, "amount": amount}
    return open_proposal(
        ctx,
        title=f"Treasury spend of {amount} to {to}",
        body=memo,
        voting_blocks=int(ctx.params["treasury_voting_blocks"]),
        action=action,
    )


@handler("REWARD_CLAIM")
def reward_claim(ctx: TxContext) -> dict[str, Any]:
    """Pay ``reward_amount`` from the reward pool to the signer."""
    expect_fields(ctx.payload, set())
    _reject_system_signer(ctx)
    account = ctx.account()
    interval = ctx.params["reward_interval_blocks"]
    last = account.get("last_reward_height")
    if last is not None and ctx.height - last < interval:
        raise TxRejected(
            "conflict",
            f"a reward may be claimed once every {interval} blocks",
            {"next_claim_height": last + interval},
        )
    amount = int(ctx.params["reward_amount"])
    pool_id, _ = system_accounts(ctx.params)
    pool = ctx.state.get("account", pool_id)
    available = 0 if pool is None else pool["balance"]
    if pool is None or available < amount:
        raise TxRejected(
            "reward_pool_empty",
            f"the reward pool {pool_id} has balance {available}, below the reward "
            f"of {amount}",
            {"pool": pool_id, "balance": available, "reward_amount": amount},
        )
    pool["balance"] -= amount
    account["balance"] += amount
    account["last_reward_height"] = ctx.height
    ctx.state.put("account", pool_id, pool)
    ctx.state.put("account", ctx.signer, account)
    return {"amount": amount}
