"""Follows between accounts."""

from __future__ import annotations

from typing import Any

from weall.errors import TxRejected
from weall.protocol.rules._payload import (
    expect_fields,
    get_account_id,
    get_bool,
    not_found,
)
from weall.protocol.txtypes import TxContext, handler

__all__: list[str] = []


@handler("FOLLOW_SET")
def follow_set(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"target", "following"})
    target = get_account_id(ctx.payload, "target")
    following = get_bool(ctx.payload, "following")
    if target == ctx.signer:
        raise TxRejected("invalid_payload", "an account cannot follow itself")
    target_account = ctx.state.get("account", target)
    if target_account is None:
        raise not_found("account", target)
    key = f"{ctx.signer}/{target}"
    exists = ctx.state.get("follow", key) is not None
    if following == exists:
        return {}
    me = ctx.account()
    delta = 1 if following else -1
    if following:
        ctx.state.put("follow", key, {"height": ctx.height})
    else:
        ctx.state.delete("follow", key)
    me["counts"]["following"] += delta
    target_account["counts"]["followers"] += delta
    ctx.state.put("account", ctx.signer, me)
    ctx.state.put("account", target, target_account)
    return {}
