"""Governance: proposals, votes, and the tally at the close height.

A proposal closes at ``height + voting_blocks``. Votes are accepted in every
block up to and including the close height, and an end-block hook tallies
after that block's transactions. Quorum counts every vote cast, abstentions
included, against the ``gov_quorum`` in force at the close. A proposal
passes when quorum is met and yes votes outnumber no votes. A passed
``param_change`` is validated again against the params of that moment and
written to ``("chain", "params")``, so it takes effect from the next block.

A ``treasury_spend`` action comes only from ``TREASURY_SPEND_PROPOSE``
(``GOV_PROPOSAL_CREATE`` accepts param changes only) and is voted like any
proposal. When it passes, the close moves ``amount`` from the treasury
account named in the action (``from``) to ``to``, or fails with
``insufficient_balance`` when the treasury has less by then.

An action is economic when it spends from the treasury, when it changes a
key of ``ECONOMIC_PARAMS``, or when it changes ``gates`` for an economic
transaction type, because that decides who may move balances. An economic
action is rejected as ``economics_locked`` while the economics lock holds,
both at creation and at the close.

State kinds:
    ``gov_proposal`` (key proposal id): the proposal, its tally and outcome.
    ``gov_vote`` (key ``"{proposal_id}/{account_id}"``): ``{"choice", "height"}``.
    ``gov_close`` (key ``"{close_height:012d}.{proposal_id}"``): proposals the
    hook closes at that height.
"""

from __future__ import annotations

from typing import Any, Final

from weall.errors import ProtocolError, TxRejected
from weall.protocol.execute import chain_params
from weall.protocol.params import ECONOMIC_PARAMS, GENESIS_DEFAULTS, validate_params
from weall.protocol.rules._payload import (
    bump_counter,
    expect_fields,
    get_int,
    get_object_id,
    get_text,
    invalid,
    not_found,
)
from weall.protocol.state import Overlay
from weall.protocol.txtypes import (
    TX_TYPES,
    GenesisInfo,
    TxContext,
    economics_unlock_at_ms,
    handler,
)

__all__ = [
    "CHOICES",
    "TREASURY_SPEND",
    "close_proposals",
    "is_economic_action",
    "open_proposal",
]

MAX_TITLE_CHARS: Final = 200
MAX_BODY_CHARS: Final = 20_000
CHOICES: Final = ("yes", "no", "abstain")
PARAM_CHANGE: Final = "param_change"
TREASURY_SPEND: Final = "treasury_spend"

# Proposal status values.
OPEN: Final = "open"  # accepting votes until close_height
PASSED: Final = "passed"  # open -> passed: quorum met, yes > no, action applied
REJECTED: Final = "rejected"  # open -> rejected: quorum met, yes <= no
NO_QUORUM: Final = "no_quorum"  # open -> no_quorum: fewer votes than gov_quorum
FAILED: Final = "failed"  # open -> failed: passed, but the action could not apply


def is_economic_action(action: dict[str, Any] | None, params: dict[str, Any]) -> bool:
    """Return whether ``action`` spends, or changes an economic param or gate."""
    if action is None:
        return False
    if action["type"] == TREASURY_SPEND:
        return True
    key = action["key"]
    if key in ECONOMIC_PARAMS:
        return True
    if key != "gates":
        return False
    old, new = params.get("gates", {}), action["value"]
    return any(
        old.get(name) != new.get(name) for name, row in TX_TYPES.items() if row.economic
    )


def _check_action(ctx: TxContext) -> dict[str, Any] | None:
    action = ctx.payload.get("action")
    if action is None:
        return None
    if not isinstance(action, dict):
        raise invalid("action must be an object or null")
    expect_fields(action, {"type", "key", "value"})
    if action["type"] != PARAM_CHANGE:
        raise invalid(f"action.type must be {PARAM_CHANGE}")
    key = action["key"]
    if not isinstance(key, str) or key not in GENESIS_DEFAULTS:
        raise invalid(f"action.key {str(key)[:64]!r} is not a chain parameter")
    try:
        validate_params({**ctx.params, key: action["value"]})
    except ProtocolError as exc:
        raise invalid(f"action: {exc.message}") from None
    if is_economic_action(action, ctx.params):
        unlock_at = economics_unlock_at_ms(ctx.genesis, ctx.params)
        if ctx.timestamp_ms < unlock_at:
            raise TxRejected(
                "economics_locked",
                f"changing {key} is an economic action, locked until {unlock_at} ms",
                {"unlock_at_ms": unlock_at},
            )
    return {"type": PARAM_CHANGE, "key": key, "value": action["value"]}


@handler("GOV_PROPOSAL_CREATE")
def proposal_create(ctx: TxContext) -> dict[str, Any]:
    """Open a proposal for ``voting_blocks`` blocks, with an optional param change."""
    expect_fields(ctx.payload, {"title", "body", "voting_blocks"}, {"action"})
    title = get_text(ctx.payload, "title", MAX_TITLE_CHARS)
    body = get_text(ctx.payload, "body", MAX_BODY_CHARS, allow_empty=True)
    voting_blocks = get_int(
        ctx.payload,
        "voting_blocks",
        int(ctx.params["gov_min_voting_blocks"]),
        int(ctx.params["gov_max_voting_blocks"]),
    )
    action = _check_action(ctx)
    return open_proposal(
        ctx, title=title, body=body, voting_blocks=voting_blocks, action=action
    )


def open_proposal(
    ctx: TxContext,
    *,
    title: str,
    body: str,
    voting_blocks: int,
    action: dict[str, Any] | None,
) -> dict[str, Any]:
    """Store a proposal with the id of ``ctx``'s transaction; return the receipt ids.

    The caller has validated every argument.
    """
    close_height = ctx.height + voting_blocks
    proposal = {
        "id": ctx.tx_id,
        "proposer": ctx.signer,
        "title": title,
        "body": body,
        "action": action,
        "height": ctx.height,
        "voting_blocks": voting_blocks,
        "close_height": close_height,
        "tally": dict.fromkeys(CHOICES, 0),
        "status": OPEN,
        "outcome": None,
    }

    ctx.state.put("gov_proposal", ctx.tx_id, proposal)
    ctx.state.put(
        "gov_close", _close_key(close_height, ctx.tx_id), {"proposal_id": ctx.tx_id}
    )
    bump_counter(ctx.state, "proposals")
    return {"proposal_id": ctx.tx_id, "close_height": close_height}


def _close_key(height: int, proposal_id: str) -> str:
    return f"{height:012d}.{proposal_id}"


@handler("GOV_VOTE_CAST")
def vote_cast(ctx: TxContext) -> dict[str, Any]:
    """Cast or change the signer's vote. Repeating the same choice changes nothing."""
    expect_fields(ctx.payload, {"proposal_id", "choice"})
    proposal_id = get_object_id(ctx.payload, "proposal_id")
    choice = ctx.payload["choice"]
    if choice not in CHOICES:
        raise invalid("choice must be yes, no or abstain")
    proposal = ctx.state.get("gov_proposal", proposal_id)
    if proposal is None:
        raise not_found("proposal", proposal_id)
    if proposal["status"] != OPEN or ctx.height > proposal["close_height"]:
        raise TxRejected(
            "conflict",
            f"voting on proposal {proposal_id} closed at height {proposal['close_height']}",
            {"proposal_id": proposal_id, "close_height": proposal["close_height"]},
        )
    key = f"{proposal_id}/{ctx.signer}"
    previous = ctx.state.get("gov_vote", key)
    if previous is not None and previous["choice"] == choice:
        return {}
    if previous is not None:
        proposal["tally"][previous["choice"]] -= 1
    proposal["tally"][choice] += 1
    ctx.state.put("gov_vote", key, {"choice": choice, "height": ctx.height})
    ctx.state.put("gov_proposal", proposal_id, proposal)
    return {}


def _apply_action(
    state: Overlay, action: dict[str, Any], timestamp_ms: int
) -> str | None:
    """Apply a passed action, or return the error code when it cannot apply."""
    params = chain_params(state)
    genesis = state.get("chain", "genesis")
    if genesis is None:
        raise RuntimeError(
            "state has no chain genesis entry; the genesis was never applied"
        )
    info = GenesisInfo(
        chain_id=genesis["chain_id"],
        genesis_hash=genesis["genesis_hash"],
        genesis_time_ms=genesis["genesis_time_ms"],
        producer_pubkey=genesis["producer"],
    )
    # A proposal changing economics_lock_days may have locked the economics again.
    if is_economic_action(action, params) and timestamp_ms < economics_unlock_at_ms(
        info, params
    ):
        return "economics_locked"
    if action["type"] == TREASURY_SPEND:
        return _spend_from_treasury(state, action)
    merged = {**params, action["key"]: action["value"]}
    try:
        validate_params(merged)
    except ProtocolError:
        # Another proposal changed a related param since this one was created.
        return "invalid_payload"
    state.put("chain", "params", merged)
    return None


def _spend_from_treasury(state: Overlay, action: dict[str, Any]) -> str | None:
    """Move a passed spend from the treasury, or return ``insufficient_balance``."""
    treasury = state.get("account", action["from"])
    receiver = state.get("account", action["to"])
    amount = int(action["amount"])
    if treasury is None or treasury["balance"] < amount:
        return "insufficient_balance"
    if receiver is None:  # pragma: no cover - accounts are never deleted
        return "not_found"
    treasury["balance"] -= amount
    receiver["balance"] += amount
    state.put("account", action["from"], treasury)
    state.put("account", action["to"], receiver)
    return None


def _tally(
    state: Overlay, proposal: dict[str, Any], timestamp_ms: int, quorum: int
) -> None:
    tally = proposal["tally"]
    votes = sum(tally.values())
    outcome: dict[str, Any] = {"votes": votes, "quorum": quorum, "error": None}
    if votes < quorum:
        status = NO_QUORUM
    elif tally["yes"] <= tally["no"]:
        status = REJECTED
    elif proposal["action"] is None:
        status = PASSED
    else:
        outcome["error"] = _apply_action(state, proposal["action"], timestamp_ms)
        status = PASSED if outcome["error"] is None else FAILED
    proposal["status"] = status
    proposal["outcome"] = outcome


def close_proposals(
    state: Overlay, height: int, timestamp_ms: int, params: dict[str, Any]
) -> None:
    """Tally the proposals whose close height is ``height`` (an end-block hook).

    Proposals closing at the same height are tallied in proposal id order, so
    of two passed changes of one key the one with the greater id wins. The
    cost is one scan of the ``gov_close`` entries of this height.
    """
    for key, entry in state.scan("gov_close", f"{height:012d}."):
        proposal = state.get("gov_proposal", entry["proposal_id"])
        state.delete("gov_close", key)
        if proposal is None or proposal["status"] != OPEN:
            continue
        # OPEN -> PASSED, REJECTED, NO_QUORUM or FAILED
        _tally(state, proposal, timestamp_ms, int(params["gov_quorum"]))
        proposal["closed_height"] = height
        state.put("gov_proposal", proposal["id"], proposal)
