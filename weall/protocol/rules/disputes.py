"""Disputes over posts and comments, decided by assigned jurors.

``DISPUTE_OPEN`` assigns ``dispute_jurors`` jurors, excluding the opener and
the target's author. A majority of the assigned jurors (more than half of
them, not of the votes cast) decides: uphold hides the target and dismiss
clears its ``hidden`` flag, which also makes a dispute an appeal of an
earlier uphold. When neither side can reach a majority any more the dispute
closes as ``no_majority`` and the target is unchanged. A dispute still open
``dispute_expiry_blocks`` after it opened expires and the target is unchanged.

State kinds:
    ``dispute`` (key dispute id): the dispute, its jurors and votes.
    ``dispute_open`` (key target id): ``{"dispute_id"}`` of the target's one
    open dispute.
    ``dispute_expiry`` (key ``"{expires_at_height:012d}.{dispute_id}"``):
    disputes the end-block hook expires at that height.
    ``juror_task`` (key ``"{juror}/{dispute_id}"``): votes still pending.
"""

from __future__ import annotations

from typing import Any, Final

from weall.errors import TxRejected
from weall.protocol.rules._assign import (
    add_juror_tasks,
    assign,
    clear_juror_tasks,
    delete_if_present,
)
from weall.protocol.rules._payload import (
    bump_counter,
    expect_fields,
    get_object_id,
    get_text,
    invalid,
    not_found,
)
from weall.protocol.rules.content import find_target
from weall.protocol.state import Overlay
from weall.protocol.txtypes import JUROR, TxContext, handler

__all__ = ["VERDICTS", "expire_disputes"]

MAX_REASON_CHARS: Final = 500
VERDICTS: Final = ("uphold", "dismiss")

# Dispute status values.
OPEN: Final = "open"  # waiting for votes
UPHELD: Final = "upheld"  # open -> upheld: a majority upheld, target hidden
DISMISSED: Final = "dismissed"  # open -> dismissed: a majority dismissed, target shown
NO_MAJORITY: Final = "no_majority"  # open -> no_majority: neither side can reach one
EXPIRED: Final = "expired"  # open -> expired: dispute_expiry_blocks passed


def _expiry_key(height: int, dispute_id: str) -> str:
    return f"{height:012d}.{dispute_id}"


def _disputable_target(ctx: TxContext, target_id: str) -> tuple[str, dict[str, Any]]:
    kind, target = find_target(ctx, target_id)
    if target.get("deleted"):
        raise TxRejected(
            "conflict", f"{kind} {target_id} was deleted", {"target_id": target_id}
        )
    existing = ctx.state.get("dispute_open", target_id)
    if existing is not None:
        raise TxRejected(
            "conflict",
            f"{kind} {target_id} already has an open dispute",
            {"dispute_id": existing["dispute_id"]},
        )
    return kind, target


@handler("DISPUTE_OPEN")
def dispute_open(ctx: TxContext) -> dict[str, Any]:
    """Open a dispute over a post or comment and assign its jurors."""
    expect_fields(ctx.payload, {"target_id", "reason"})
    target_id = get_object_id(ctx.payload, "target_id")
    reason = get_text(ctx.payload, "reason", MAX_REASON_CHARS)
    kind, target = _disputable_target(ctx, target_id)

    jurors = assign(
        ctx.state,
        role=JUROR,
        request_id=ctx.tx_id,
        count=int(ctx.params["dispute_jurors"]),
        exclude={ctx.signer, target["author"]},
        code="insufficient_jurors",
    )

    expires = ctx.height + int(ctx.params["dispute_expiry_blocks"])
    dispute = {
        "id": ctx.tx_id,
        "target_id": target_id,
        "target_kind": kind,
        "target_author": target["author"],
        "opener": ctx.signer,
        "reason": reason,
        "jurors": jurors,
        "votes": {},
        "tally": dict.fromkeys(VERDICTS, 0),
        "status": OPEN,
        "height": ctx.height,
        "expires_at_height": expires,
        "closed_height": None,
    }

    ctx.state.put("dispute", ctx.tx_id, dispute)
    ctx.state.put("dispute_open", target_id, {"dispute_id": ctx.tx_id})
    ctx.state.put(
        "dispute_expiry", _expiry_key(expires, ctx.tx_id), {"dispute_id": ctx.tx_id}
    )
    task = {"type": "dispute", "height": ctx.height, "expires_at_height": expires}
    add_juror_tasks(ctx.state, jurors, ctx.tx_id, task)
    bump_counter(ctx.state, "disputes")
    return {"dispute_id": ctx.tx_id}


def _dispute_for_vote(ctx: TxContext, dispute_id: str) -> dict[str, Any]:
    dispute = ctx.state.get("dispute", dispute_id)
    if dispute is None:
        raise not_found("dispute", dispute_id)
    if ctx.signer not in dispute["jurors"]:
        raise TxRejected(
            "not_assigned",
            f"{ctx.signer} is not a juror of dispute {dispute_id}",
            {"dispute_id": dispute_id},
        )
    if dispute["status"] != OPEN:
        raise TxRejected(
            "conflict",
            f"dispute {dispute_id} is {dispute['status']}",
            {"dispute_id": dispute_id, "status": dispute["status"]},
        )
    if ctx.signer in dispute["votes"]:
        raise TxRejected(
            "conflict",
            f"{ctx.signer} already voted on dispute {dispute_id}",
            {"dispute_id": dispute_id},
        )
    return dispute


def _decide(dispute: dict[str, Any]) -> str:
    majority = len(dispute["jurors"]) // 2 + 1
    remaining = len(dispute["jurors"]) - len(dispute["votes"])
    uphold, dismiss = dispute["tally"]["uphold"], dispute["tally"]["dismiss"]
    if uphold >= majority:
        return UPHELD
    if dismiss >= majority:
        return DISMISSED
    if uphold + remaining < majority and dismiss + remaining < majority:
        return NO_MAJORITY
    return OPEN


@handler("DISPUTE_VOTE_SUBMIT")
def vote_submit(ctx: TxContext) -> dict[str, Any]:
    """Record an assigned juror's vote and close the dispute once a side has a majority."""
    expect_fields(ctx.payload, {"dispute_id", "verdict"})
    dispute_id = get_object_id(ctx.payload, "dispute_id")
    verdict = ctx.payload["verdict"]
    if verdict not in VERDICTS:
        raise invalid("verdict must be uphold or dismiss")
    dispute = _dispute_for_vote(ctx, dispute_id)
    dispute["votes"][ctx.signer] = {"verdict": verdict, "height": ctx.height}
    dispute["tally"][verdict] += 1
    delete_if_present(ctx.state, "juror_task", f"{ctx.signer}/{dispute_id}")
    status = _decide(dispute)
    if status == OPEN:
        ctx.state.put("dispute", dispute_id, dispute)
    else:
        _close(ctx.state, dispute, status, ctx.height)
    return {"dispute_id": dispute_id, "status": status}


def _close(state: Overlay, dispute: dict[str, Any], status: str, height: int) -> None:
    # OPEN -> UPHELD, DISMISSED, NO_MAJORITY or EXPIRED
    dispute["status"] = status
    dispute["closed_height"] = height
    state.put("dispute", dispute["id"], dispute)
    delete_if_present(state, "dispute_open", dispute["target_id"])
    delete_if_present(
        state,
        "dispute_expiry",
        _expiry_key(dispute["expires_at_height"], dispute["id"]),
    )
    clear_juror_tasks(state, dispute["jurors"], dispute["id"])
    if status in (UPHELD, DISMISSED):
        target = state.get(dispute["target_kind"], dispute["target_id"])
        if target is not None:
            target["hidden"] = status == UPHELD
            state.put(dispute["target_kind"], dispute["target_id"], target)


def expire_disputes(
    state: Overlay, height: int, timestamp_ms: int, params: dict[str, Any]
) -> None:
    """Expire the disputes still open at their ``expires_at_height`` (an end-block hook).

    Votes included in the block at that height still count. The cost is one
    scan of the ``dispute_expiry`` entries of this height.
    """
    for _, entry in state.scan("dispute_expiry", f"{height:012d}."):
        dispute = state.get("dispute", entry["dispute_id"])
        if dispute is not None and dispute["status"] == OPEN:
            _close(state, dispute, EXPIRED, height)
