"""Proof of personhood: asynchronous and live reviews, and juror enrolment.

A tier 0 account opens an asynchronous request with its evidence, and
``poh_async_jurors`` jurors review it; ``poh_async_threshold`` approvals raise
the account to tier 1. A tier 1 account opens a live request, and
``poh_live_threshold`` approvals by jurors who attended the live session
raise it to tier 2. The juror count and threshold are copied into the
request when it opens, so a later parameter change does not alter an open
request.

State kinds:
    ``poh_request`` (key request id): the request, its jurors and verdicts.
    ``poh_open`` (key account id): ``{"request_id"}`` of the account's one
    open request.
    ``poh_expiry`` (key ``"{expires_at_height:012d}.{request_id}"``): the
    requests that the end-block hook expires at that height.
    ``juror_task`` (key ``"{juror}/{request_id}"``): verdicts still pending.
"""

from __future__ import annotations

from typing import Any, Final

from weall.errors import TxRejected
from weall.protocol.rules._assign import (
    add_juror_tasks,
    assign,
    clear_juror_tasks,
    delete_if_present,
    grant_role,
    juror_tasks,
)
from weall.protocol.rules._payload import (
    bump_counter,
    expect_fields,
    get_bool,
    get_cid,
    get_object_id,
    invalid,
    not_found,
)
from weall.protocol.state import Overlay, StateReader
from weall.protocol.txtypes import JUROR, TxContext, handler

__all__ = [
    "APPROVED",
    "EXPIRED",
    "OPEN",
    "REJECTED",
    "expire_requests",
    "juror_tasks",
    "open_request_id",
]

ASYNC: Final = "async"
LIVE: Final = "live"
VERDICTS: Final = ("approve", "reject")

# Request status values.
OPEN: Final = "open"  # waiting for verdicts
APPROVED: Final = "approved"  # open -> approved: threshold reached, tier raised
REJECTED: Final = "rejected"  # open -> rejected: approvals can no longer reach it
EXPIRED: Final = "expired"  # open -> expired: poh_request_expiry_blocks passed

# The tier an approved request grants, and the type that submits its verdicts.
_GRANTED_TIER: Final = {ASYNC: 1, LIVE: 2}
_VERDICT_TYPE: Final = {ASYNC: "POH_REVIEW_SUBMIT", LIVE: "POH_LIVE_VERDICT_SUBMIT"}


def open_request_id(state: StateReader, account_id: str) -> str | None:
    """Return the id of the open PoH request of ``account_id``, if any."""
    entry = state.get("poh_open", account_id)
    return None if entry is None else str(entry["request_id"])


def _expiry_key(height: int, request_id: str) -> str:
    return f"{height:012d}.{request_id}"


def _open_request(
    ctx: TxContext, kind: str, juror_count: int, threshold: int, extra: dict[str, Any]
) -> dict[str, Any]:
    existing = open_request_id(ctx.state, ctx.signer)
    if existing is not None:
        raise TxRejected(
            "conflict",
            f"{ctx.signer} already has an open PoH request",
            {"request_id": existing},
        )

    jurors = assign(
        ctx.state,
        role=JUROR,
        request_id=ctx.tx_id,
        count=juror_count,
        exclude={ctx.signer},
        code="insufficient_jurors",
    )

    expires = ctx.height + int(ctx.params["poh_request_expiry_blocks"])
    request = {
        "id": ctx.tx_id,
        "type": kind,
        "applicant": ctx.signer,
        **extra,
        "jurors": jurors,
        "threshold": threshold,
        "verdicts": {},
        "approvals": 0,
        "status": OPEN,
        "height": ctx.height,
        "expires_at_height": expires,
        "closed_height": None,
    }

    ctx.state.put("poh_request", ctx.tx_id, request)
    ctx.state.put("poh_open", ctx.signer, {"request_id": ctx.tx_id})
    ctx.state.put(
        "poh_expiry", _expiry_key(expires, ctx.tx_id), {"request_id": ctx.tx_id}
    )
    task = {"type": f"poh_{kind}", "height": ctx.height, "expires_at_height": expires}
    add_juror_tasks(ctx.state, jurors, ctx.tx_id, task)
    bump_counter(ctx.state, "poh_requests")
    return {"request_id": ctx.tx_id}


@handler("POH_ASYNC_REQUEST_OPEN")
def async_request_open(ctx: TxContext) -> dict[str, Any]:
    """Open an asynchronous review of ``evidence_cid`` for a tier 0 account."""
    expect_fields(ctx.payload, {"evidence_cid"})
    evidence = get_cid(ctx.payload["evidence_cid"], "evidence_cid")
    tier = ctx.account()["poh_tier"]
    if tier != 0:
        raise TxRejected(
            "conflict",
            f"only tier 0 accounts open an asynchronous request; {ctx.signer} has tier {tier}",
            {"tier": tier},
        )
    return _open_request(
        ctx,
        ASYNC,
        int(ctx.params["poh_async_jurors"]),
        int(ctx.params["poh_async_threshold"]),
        {"evidence_cid": evidence},
    )


@handler("POH_LIVE_REQUEST_OPEN")
def live_request_open(ctx: TxContext) -> dict[str, Any]:
    """Open a live session review for a tier 1 account."""
    expect_fields(ctx.payload, set())
    tier = ctx.account()["poh_tier"]
    # The gate is tier 1 unless params.gates lowers it, but the rule stays tier 1 only.
    if tier < 1:
        raise TxRejected(
            "tier_required",
            f"a live request needs PoH tier 1; {ctx.signer} has tier {tier}",
            {"required_tier": 1, "tier": tier},
        )
    if tier > 1:
        raise TxRejected(
            "conflict",
            f"only tier 1 accounts open a live request; {ctx.signer} has tier {tier}",
            {"tier": tier},
        )
    return _open_request(
        ctx,
        LIVE,
        int(ctx.params["poh_live_jurors"]),
        int(ctx.params["poh_live_threshold"]),
        {},
    )


def _request_for_verdict(ctx: TxContext, kind: str) -> dict[str, Any]:
    request_id = get_object_id(ctx.payload, "request_id")
    request = ctx.state.get("poh_request", request_id)
    if request is None:
        raise not_found("PoH request", request_id)
    if request["type"] != kind:
        raise invalid(
            f"request {request_id} is a {request['type']} request; "
            f"submit its verdict with {_VERDICT_TYPE[request['type']]}",
            request_id=request_id,
        )
    if ctx.signer not in request["jurors"]:
        raise TxRejected(
            "not_assigned",
            f"{ctx.signer} is not a juror of request {request_id}",
            {"request_id": request_id},
        )
    if request["status"] != OPEN:
        raise TxRejected(
            "conflict",
            f"request {request_id} is {request['status']}",
            {"request_id": request_id, "status": request["status"]},
        )
    if ctx.signer in request["verdicts"]:
        raise TxRejected(
            "conflict",
            f"{ctx.signer} already submitted a verdict on request {request_id}",
            {"request_id": request_id},
        )
    return request


def _verdict(payload: dict[str, Any]) -> str:
    verdict = payload.get("verdict")
    if verdict not in VERDICTS:
        raise invalid("verdict must be approve or reject")
    return str(verdict)


def _record_verdict(
    ctx: TxContext, request: dict[str, Any], verdict: dict[str, Any], approves: bool
) -> dict[str, Any]:
    request["verdicts"][ctx.signer] = verdict
    if approves:
        request["approvals"] += 1
    delete_if_present(ctx.state, "juror_task", f"{ctx.signer}/{request['id']}")
    remaining = len(request["jurors"]) - len(request["verdicts"])
    if request["approvals"] >= request["threshold"]:
        _close(ctx.state, request, APPROVED, ctx.height)
        _raise_tier(ctx.state, request["applicant"], _GRANTED_TIER[request["type"]])
    elif request["approvals"] + remaining < request["threshold"]:
        _close(ctx.state, request, REJECTED, ctx.height)
    else:
        ctx.state.put("poh_request", request["id"], request)
    return {"request_id": request["id"], "status": request["status"]}


@handler("POH_REVIEW_SUBMIT")
def review_submit(ctx: TxContext) -> dict[str, Any]:
    """Record an assigned juror's verdict on an asynchronous request."""
    expect_fields(ctx.payload, {"request_id", "verdict"})
    verdict = _verdict(ctx.payload)
    request = _request_for_verdict(ctx, ASYNC)
    return _record_verdict(
        ctx, request, {"verdict": verdict, "height": ctx.height}, verdict == "approve"
    )


@handler("POH_LIVE_VERDICT_SUBMIT")
def live_verdict_submit(ctx: TxContext) -> dict[str, Any]:
    """Record an assigned juror's attendance and verdict on a live request."""
    expect_fields(ctx.payload, {"request_id", "attended", "verdict"})
    attended = get_bool(ctx.payload, "attended")
    verdict = _verdict(ctx.payload)
    if verdict == "approve" and not attended:
        raise invalid("a juror who did not attend the live session cannot approve")
    request = _request_for_verdict(ctx, LIVE)
    record = {"verdict": verdict, "attended": attended, "height": ctx.height}
    return _record_verdict(ctx, request, record, verdict == "approve")


def _close(state: Overlay, request: dict[str, Any], status: str, height: int) -> None:
    # OPEN -> APPROVED, REJECTED or EXPIRED
    request["status"] = status
    request["closed_height"] = height
    state.put("poh_request", request["id"], request)
    delete_if_present(state, "poh_open", request["applicant"])
    delete_if_present(
        state, "poh_expiry", _expiry_key(request["expires_at_height"], request["id"])
    )
    clear_juror_tasks(state, request["jurors"], request["id"])


def _raise_tier(state: Overlay, account_id: str, tier: int) -> None:
    account = state.get("account", account_id)
    if account is not None and account["poh_tier"] < tier:
        account["poh_tier"] = tier
        state.put("account", account_id, account)


def expire_requests(
    state: Overlay, height: int, timestamp_ms: int, params: dict[str, Any]
) -> None:
    """Expire the requests still open at their ``expires_at_height`` (an end-block hook).

    Verdicts included in the block at that height still count, because the
    hook runs after the block's transactions. The cost is one scan of the
    ``poh_expiry`` entries of this height.
    """
    for _, entry in state.scan("poh_expiry", f"{height:012d}."):
        request = state.get("poh_request", entry["request_id"])
        if request is not None and request["status"] == OPEN:
            _close(state, request, EXPIRED, height)


@handler("ROLE_JUROR_ENROLL")
def juror_enroll(ctx: TxContext) -> dict[str, Any]:
    """Grant the signer role juror, which makes it eligible for assignment."""
    expect_fields(ctx.payload, set())
    grant_role(ctx.state, ctx.signer, JUROR, ctx.height)
    return {}
