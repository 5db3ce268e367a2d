"""Posts, comments, reactions and flags.

Index entries make the reads cheap and are part of the state root like any
other entry: ``feed`` (every post, keyed by height and post id),
``account_post`` (per author) and ``comment_index`` (per root post). Within
one block, posts are ordered by id, which is deterministic for every replica.
"""

from __future__ import annotations

from typing import Any

from weall.errors import TxRejected
from weall.protocol.rules._payload import (
    bump_counter,
    expect_fields,
    get_cid,
    get_object_id,
    get_text,
    invalid,
    not_found,
)
from weall.protocol.txtypes import TxContext, handler

__all__ = ["find_target", "index_key", "is_visible"]

MAX_MEDIA: int = 16
MAX_FLAG_REASON: int = 500


def index_key(height: int, object_id: str) -> str:
    return f"{height:012d}.{object_id}"


def is_visible(item: dict[str, Any]) -> bool:
    return not item.get("deleted") and not item.get("hidden")


def find_target(ctx: TxContext, target_id: str) -> tuple[str, dict[str, Any]]:
    """Return ``(kind, record)`` of a post or comment, or raise ``not_found``."""
    for kind in ("post", "comment"):
        record = ctx.state.get(kind, target_id)
        if record is not None:
            return kind, record
    raise not_found("post or comment", target_id)


def _bump_account_count(ctx: TxContext, account_id: str, name: str, delta: int) -> None:
    account = ctx.state.get("account", account_id)
    if account is not None:
        account["counts"][name] = account["counts"].get(name, 0) + delta
        ctx.state.put("account", account_id, account)


def _check_media(ctx: TxContext) -> list[str]:
    media = ctx.payload.get("media", [])
    if not isinstance(media, list) or len(media) > MAX_MEDIA:
        raise invalid(f"media must be a list of at most {MAX_MEDIA} CIDs")
    cids = [get_cid(cid, "media[]") for cid in media]
    if len(set(cids)) != len(cids):
        raise invalid("media lists a CID twice")
    for cid in cids:
        if ctx.state.get("media", cid) is None:
            raise invalid(f"media {cid} has no pin request; upload it first", cid=cid)
    return cids


def _check_group(ctx: TxContext) -> str | None:
    group_id = ctx.payload.get("group_id")
    if group_id is None:
        return None
    if not isinstance(group_id, str) or ctx.state.get("group", group_id) is None:
        raise not_found("group", str(group_id)[:64])
    if ctx.state.get("group_member", f"{group_id}/{ctx.signer}") is None:
        raise TxRejected(
            "role_required",
            f"only members of {group_id} may post in it",
            {"group_id": group_id},
        )
    return group_id


@handler("CONTENT_POST_CREATE")
def post_create(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"body"}, {"media", "group_id"})
    body = get_text(ctx.payload, "body", ctx.params["max_post_chars"])
    media = _check_media(ctx)
    group_id = _check_group(ctx)
    post: dict[str, Any] = {
        "id": ctx.tx_id,
        "kind": "post",
        "author": ctx.signer,
        "body": body,
        "media": media,
        "group_id": group_id,
        "height": ctx.height,
        "timestamp_ms": ctx.timestamp_ms,
        "edited_at_ms": None,
        "deleted": False,
        "hidden": False,
        "comment_count": 0,
        "reactions": {},
        "flag_count": 0,
    }
    ctx.state.put("post", ctx.tx_id, post)
    key = index_key(ctx.height, ctx.tx_id)
    ctx.state.put("feed", key, {"post_id": ctx.tx_id})
    ctx.state.put("account_post", f"{ctx.signer}/{key}", {"post_id": ctx.tx_id})
    if group_id is not None:
        ctx.state.put("group_post", f"{group_id}/{key}", {"post_id": ctx.tx_id})
    _bump_account_count(ctx, ctx.signer, "posts", 1)
    bump_counter(ctx.state, "posts")
    return {"post_id": ctx.tx_id}


def _own_post(ctx: TxContext, post_id: str) -> dict[str, Any]:
    post = ctx.state.get("post", post_id)
    if post is None:
        raise not_found("post", post_id)
    if post["author"] != ctx.signer:
        raise TxRejected(
            "forbidden", "only the author may change a post", {"post_id": post_id}
        )
    if post["deleted"]:
        raise TxRejected("conflict", "the post was deleted", {"post_id": post_id})
    return post


@handler("CONTENT_POST_EDIT")
def post_edit(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"post_id", "body"})
    post_id = get_object_id(ctx.payload, "post_id")
    body = get_text(ctx.payload, "body", ctx.params["max_post_chars"])
    post = _own_post(ctx, post_id)
    post["body"] = body
    post["edited_at_ms"] = ctx.timestamp_ms
    ctx.state.put("post", post_id, post)
    return {}


@handler("CONTENT_POST_DELETE")
def post_delete(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"post_id"})
    post_id = get_object_id(ctx.payload, "post_id")
    post = _own_post(ctx, post_id)
    # A tombstone keeps the id, author and height, so links and counts still resolve.
    post.update(deleted=True, body="", media=[], deleted_at_ms=ctx.timestamp_ms)
    ctx.state.put("post", post_id, post)
    return {}


@handler("CONTENT_COMMENT_CREATE")
def comment_create(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"parent_id", "body"})
    parent_id = get_object_id(ctx.payload, "parent_id")
    body = get_text(ctx.payload, "body", ctx.params["max_comment_chars"])
    kind, parent = find_target(ctx, parent_id)
    if not is_visible(parent):
        raise TxRejected(
            "conflict", "the parent is deleted or hidden", {"parent_id": parent_id}
        )
    post_id = parent_id if kind == "post" else parent["post_id"]
    post = ctx.state.get("post", post_id)
    if post is None or not is_visible(post):
        raise TxRejected(
            "conflict", "the post is deleted or hidden", {"post_id": post_id}
        )
    comment: dict[str, Any] = {
        "id": ctx.tx_id,
        "kind": "comment",
        "author": ctx.signer,
        "parent_id": parent_id,
        "post_id": post_id,
        "body": body,
        "height": ctx.height,
        "timestamp_ms": ctx.timestamp_ms,
        "deleted": False,
        "hidden": False,
        "reactions": {},
        "flag_count": 0,
    }
    ctx.state.put("comment", ctx.tx_id, comment)
    ctx.state.put(
        "comment_index",
        f"{post_id}/{index_key(ctx.height, ctx.tx_id)}",
        {"comment_id": ctx.tx_id},
    )
    post["comment_count"] += 1
    ctx.state.put("post", post_id, post)
    _bump_account_count(ctx, ctx.signer, "comments", 1)
    bump_counter(ctx.state, "comments")
    return {"comment_id": ctx.tx_id}


@handler("CONTENT_COMMENT_DELETE")
def comment_delete(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"comment_id"})
    comment_id = get_object_id(ctx.payload, "comment_id")
    comment = ctx.state.get("comment", comment_id)
    if comment is None:
        raise not_found("comment", comment_id)
    if comment["author"] != ctx.signer:
        raise TxRejected("forbidden", "only the author may delete a comment")
    if comment["deleted"]:
        raise TxRejected("conflict", "the comment was already deleted")
    comment.update(deleted=True, body="", deleted_at_ms=ctx.timestamp_ms)
    ctx.state.put("comment", comment_id, comment)
    return {}


@handler("CONTENT_REACTION_SET")
def reaction_set(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"target_id", "reaction"})
    target_id = get_object_id(ctx.payload, "target_id")
    reaction = ctx.payload["reaction"]
    if reaction is not None and reaction not in ctx.params["reactions"]:
        raise invalid(
            f"reaction must be one of {', '.join(ctx.params['reactions'])} or null"
        )
    kind, target = find_target(ctx, target_id)
    if not is_visible(target):
        raise TxRejected("conflict", "the target is deleted or hidden")
    key = f"{target_id}/{ctx.signer}"
    previous = ctx.state.get("reaction", key)
    counts = target["reactions"]
    if previous is not None:
        old = previous["reaction"]
        counts[old] -= 1
        if counts[old] == 0:
            del counts[old]
    if reaction is None:
        if previous is not None:
            ctx.state.delete("reaction", key)
    else:
        counts[reaction] = counts.get(reaction, 0) + 1
        ctx.state.put("reaction", key, {"reaction": reaction, "height": ctx.height})
    ctx.state.put(kind, target_id, target)
    return {}


@handler("CONTENT_FLAG")
def flag(ctx: TxContext) -> dict[str, Any]:
    expect_fields(ctx.payload, {"target_id", "reason"})
    target_id = get_object_id(ctx.payload, "target_id")
    reason = get_text(ctx.payload, "reason", MAX_FLAG_REASON)
    kind, target = find_target(ctx, target_id)
    key = f"{target_id}/{ctx.signer}"
    if ctx.state.get("flag", key) is not None:
        raise TxRejected("conflict", "this account already flagged the target")
    ctx.state.put("flag", key, {"reason": reason, "height": ctx.height})
    target["flag_count"] = target.get("flag_count", 0) + 1
    ctx.state.put(kind, target_id, target)
    return {}
