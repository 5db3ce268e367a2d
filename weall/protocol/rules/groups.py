"""Groups: creation, membership requests and admin decisions.

State kinds:
    ``group`` (key group id): the group record with its admins and policy.
    ``group_member`` (key ``"{group_id}/{account_id}"``): ``{"role": "admin"
    or "member", "since_height"}``; content rules read it for group posts.
    ``group_request`` (key ``"{group_id}/{account_id}"``): a pending request
    to join an approval group.
"""

from __future__ import annotations

from typing import Any, Final

from weall.errors import TxRejected
from weall.protocol.rules._payload import (
    GROUP_ID_RE,
    bump_counter,
    expect_fields,
    get_account_id,
    get_bool,
    get_text,
    invalid,
    not_found,
)
from weall.protocol.state import StateReader
from weall.protocol.txtypes import TxContext, handler

__all__ = ["POLICIES", "is_group_admin", "is_member"]

MAX_GROUP_NAME_CHARS: Final = 100
OPEN_POLICY: Final = "open"  # every request is admitted at once
APPROVAL_POLICY: Final = "approval"  # an admin decides each request
POLICIES: Final = (OPEN_POLICY, APPROVAL_POLICY)
ADMIN: Final = "admin"
MEMBER: Final = "member"


def is_member(state: StateReader, group_id: str, account_id: str) -> bool:
    """Return whether ``account_id`` is a member (or admin) of ``group_id``."""
    return state.get("group_member", f"{group_id}/{account_id}") is not None


def is_group_admin(state: StateReader, group_id: str, account_id: str) -> bool:
    """Return whether ``account_id`` is an admin of ``group_id``."""
    member = state.get("group_member", f"{group_id}/{account_id}")
    return member is not None and member["role"] == ADMIN


def _group_id(payload: dict[str, Any]) -> str:
    value = payload.get("group_id")
    if not isinstance(value, str) or not GROUP_ID_RE.fullmatch(value):
        raise invalid("group_id must be 3 to 32 characters of [a-z0-9_-]")
    return value


def _existing_group(ctx: TxContext, group_id: str) -> dict[str, Any]:
    group = ctx.state.get("group", group_id)
    if group is None:
        raise not_found("group", group_id)
    return group


def _add_member(
    ctx: TxContext, group: dict[str, Any], account_id: str, role: str
) -> None:
    ctx.state.put(
        "group_member",
        f"{group['id']}/{account_id}",
        {"role": role, "since_height": ctx.height},
    )
    group["member_count"] += 1
    ctx.state.put("group", group["id"], group)


@handler("GROUP_CREATE")
def group_create(ctx: TxContext) -> dict[str, Any]:
    """Create a group whose creator is its first admin and member."""
    expect_fields(ctx.payload, {"group_id", "name", "policy"})
    group_id = _group_id(ctx.payload)
    name = get_text(ctx.payload, "name", MAX_GROUP_NAME_CHARS)
    policy = ctx.payload["policy"]
    if policy not in POLICIES:
        raise invalid("policy must be open or approval")
    if ctx.state.get("group", group_id) is not None:
        raise TxRejected(
            "conflict", f"group {group_id} already exists", {"group_id": group_id}
        )
    group = {
        "id": group_id,
        "name": name,
        "policy": policy,
        "creator": ctx.signer,
        "admins": [ctx.signer],
        "member_count": 0,
        "height": ctx.height,
    }
    _add_member(ctx, group, ctx.signer, ADMIN)
    bump_counter(ctx.state, "groups")
    return {"group_id": group_id}


@handler("GROUP_MEMBERSHIP_REQUEST")
def membership_request(ctx: TxContext) -> dict[str, Any]:
    """Join an open group at once, or file a request with an approval group."""
    expect_fields(ctx.payload, {"group_id"})
    group_id = _group_id(ctx.payload)
    group = _existing_group(ctx, group_id)
    key = f"{group_id}/{ctx.signer}"
    if is_member(ctx.state, group_id, ctx.signer):
        raise TxRejected("conflict", f"{ctx.signer} is already a member of {group_id}")
    if ctx.state.get("group_request", key) is not None:
        raise TxRejected(
            "conflict", f"{ctx.signer} already has a pending request to {group_id}"
        )
    if group["policy"] == OPEN_POLICY:
        _add_member(ctx, group, ctx.signer, MEMBER)
        return {"group_id": group_id, "status": "member"}
    ctx.state.put("group_request", key, {"height": ctx.height})
    return {"group_id": group_id, "status": "pending"}


@handler("GROUP_MEMBERSHIP_DECIDE")
def membership_decide(ctx: TxContext) -> dict[str, Any]:
    """Approve or reject a pending request. Only an admin of the group may decide."""
    expect_fields(ctx.payload, {"group_id", "account", "approve"})
    group_id = _group_id(ctx.payload)
    account_id = get_account_id(ctx.payload, "account")
    approve = get_bool(ctx.payload, "approve")
    group = _existing_group(ctx, group_id)
    if not is_group_admin(ctx.state, group_id, ctx.signer):
        raise TxRejected(
            "role_required",
            f"only an admin of {group_id} decides membership requests",
            {"required_role": "group_admin", "group_id": group_id},
        )
    key = f"{group_id}/{account_id}"
    if ctx.state.get("group_request", key) is None:
        raise not_found("membership request", key)
    ctx.state.delete("group_request", key)
    if approve:
        _add_member(ctx, group, account_id, MEMBER)
    return {"group_id": group_id, "account": account_id, "approved": approve}
