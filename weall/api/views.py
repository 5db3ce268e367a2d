"""Read models: JSON documents built from one read transaction each.

Every function takes a read-only connection and returns what a route sends,
or ``None`` when the thing does not exist.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from weall.protocol.txtypes import GenesisInfo, economics_unlock_at_ms
from weall.storage import queries

__all__ = [
    "MAX_PAGE",
    "account_posts_page",
    "account_view",
    "block_view",
    "blocks_page",
    "content_view",
    "feed_page",
    "head_view",
    "snapshot_view",
    "tx_view",
]

MAX_PAGE: Final = 100
PUBLIC_ACCOUNT_FIELDS: Final = (
    "id",
    "keys",
    "session_keys",
    "poh_tier",
    "roles",
    "next_nonce",
    "balance",
    "counts",
    "profile",
    "created_height",
)


def head_view(conn: sqlite3.Connection) -> dict[str, Any] | None:
    block = queries.head_header(conn)
    if block is None:
        return None
    header = block["header"]
    return {
        "height": block["height"],
        "hash": block["hash"],
        "timestamp_ms": header["timestamp_ms"],
        "state_root": header["state_root"],
    }


def block_view(conn: sqlite3.Connection, height: int) -> dict[str, Any] | None:
    block = queries.block_at(conn, height)
    if block is None:
        return None
    return _with_txs(conn, block)


def _with_txs(conn: sqlite3.Connection, block: dict[str, Any]) -> dict[str, Any]:
    txs = queries.txs_in_block(conn, block["height"])
    return {
        "height": block["height"],
        "hash": block["hash"],
        "header": block["header"],
        "sig": block["sig"],
        "txs": [
            {"tx_id": t["tx_id"], "envelope": t["envelope"], "receipt": t["receipt"]}
            for t in txs
        ],
    }


def blocks_page(conn: sqlite3.Connection, start: int, limit: int) -> dict[str, Any]:
    blocks = [_with_txs(conn, b) for b in queries.blocks_from(conn, start, limit)]
    head = queries.head_header(conn)
    return {
        "blocks": blocks,
        "next_from": blocks[-1]["height"] + 1 if blocks else None,
        "head_height": None if head is None else head["height"],
    }


def tx_view(conn: sqlite3.Connection, tx_id: str) -> dict[str, Any] | None:
    row = queries.tx_row(conn, tx_id)
    if row is None:
        return None
    view: dict[str, Any] = {
        "tx_id": row["tx_id"],
        "status": row["status"],
        "tx_type": row["tx_type"],
        "signer": row["signer"],
        "nonce": row["nonce"],
    }
    if "height" in row:
        view["height"] = row["height"]
    if "receipt" in row:
        view["receipt"] = row["receipt"]
    return view


def account_view(conn: sqlite3.Connection, account_id: str) -> dict[str, Any] | None:
    account = queries.SqliteState(conn).get("account", account_id)
    if account is None:
        return None
    view = {name: account.get(name) for name in PUBLIC_ACCOUNT_FIELDS}
    view["session_keys"] = [
        {
            "pubkey": s["pubkey"],
            "scope": s["scope"],
            "expires_at_ms": s["expires_at_ms"],
        }
        for s in account.get("session_keys", [])
    ]
    return view


# The fields that a hidden or deleted post or comment still shows. They link
# it and name its author, but never show its body, media or reactions.
_REDACTED_FIELDS: Final = (
    "id",
    "kind",
    "author",
    "parent_id",
    "post_id",
    "group_id",
    "height",
    "timestamp_ms",
    "deleted",
    "hidden",
)


def content_status(item: dict[str, Any]) -> str:
    """Return ``deleted``, ``hidden`` or ``visible`` for a post or comment.

    A deleted item is ``deleted`` even when a dispute also hid it.
    """
    if item.get("deleted"):
        return "deleted"
    if item.get("hidden"):
        return "hidden"
    return "visible"


def _post_view(item: dict[str, Any]) -> dict[str, Any]:
    """Return a post or comment as the API shows it, redacted unless visible."""
    status = content_status(item)
    if status == "visible":
        return {**item, "status": status}
    redacted: dict[str, Any] = {
        name: item[name] for name in _REDACTED_FIELDS if name in item
    }
    redacted["status"] = status
    return redacted


def _page(
    conn: sqlite3.Connection,
    kind: str,
    prefix: str,
    cursor: str | None,
    limit: int,
    id_field: str,
    object_kind: str,
) -> tuple[list[dict[str, Any]], str | None]:
    state = queries.SqliteState(conn)
    after = None if cursor is None else prefix + cursor
    rows = state.scan(kind, prefix, after=after, limit=limit, reverse=True)
    items = []
    for _key, entry in rows:
        item = state.get(object_kind, entry[id_field])
        # Lists leave hidden and deleted items out; only the item's own
        # route shows their redacted form.
        if item is not None and content_status(item) == "visible":
            items.append(_post_view(item))
    next_cursor = rows[-1][0][len(prefix) :] if len(rows) == limit else None
    return items, next_cursor


def feed_page(
    conn: sqlite3.Connection, cursor: str | None, limit: int
) -> dict[str, Any]:
    items, next_cursor = _page(conn, "feed", "", cursor, limit, "post_id", "post")
    return {"items": items, "next_cursor": next_cursor}


def account_posts_page(
    conn: sqlite3.Connection, account_id: str, cursor: str | None, limit: int
) -> dict[str, Any] | None:
    if queries.SqliteState(conn).get("account", account_id) is None:
        return None
    items, next_cursor = _page(
        conn, "account_post", f"{account_id}/", cursor, limit, "post_id", "post"
    )
    return {"items": items, "next_cursor": next_cursor}


def content_view(
    conn: sqlite3.Connection, object_id: str, cursor: str | None, limit: int
) -> dict[str, Any] | None:
    """Return a post with a page of its visible comments, or a comment.

    A hidden or deleted post or comment shows only its id, author, links and
    ``status``. The comments of a hidden or deleted post are not listed,
    because the thread goes with its post. Hidden and deleted comments are
    left out of a visible post's list, as the feed leaves out such posts, so
    a page may hold fewer than ``limit`` comments while ``next_cursor`` is set.
    """
    state = queries.SqliteState(conn)
    item = state.get("post", object_id) or state.get("comment", object_id)
    if item is None:
        return None
    view = _post_view(item)
    if item["kind"] != "post" or view["status"] != "visible":
        return view
    rows = state.scan(
        "comment_index",
        f"{object_id}/",
        after=(None if cursor is None else f"{object_id}/{cursor}"),
        limit=limit,
    )
    comments = []
    for _key, entry in rows:
        comment = state.get("comment", entry["comment_id"])
        if comment is not None and content_status(comment) == "visible":
            comments.append(_post_view(comment))
    view["comments"] = comments
    view["next_cursor"] = (
        rows[-1][0][len(object_id) + 1 :] if len(rows) == limit else None
    )
    return view


def snapshot_view(
    conn: sqlite3.Connection, genesis: GenesisInfo, now_ms: int
) -> dict[str, Any]:
    state = queries.SqliteState(conn)
    head = head_view(conn)
    params = state.get("chain", "params") or {}
    counts = {key: value["n"] for key, value in state.scan("counter")}
    unlock_at = economics_unlock_at_ms(genesis, params) if params else None
    chain_time = head["timestamp_ms"] if head else 0
    return {
        "chain_id": genesis.chain_id,
        "genesis_hash": genesis.genesis_hash,
        "height": head["height"] if head else None,
        "tip_hash": head["hash"] if head else None,
        "state_root": head["state_root"] if head else None,
        "counts": counts,
        "params": params,
        "economics": {
            "locked": unlock_at is not None and max(now_ms, chain_time) < unlock_at,
            "unlock_at_ms": unlock_at,
        },
    }


def record_view(conn: sqlite3.Connection, kind: str, key: str) -> dict[str, Any] | None:
    """A state record as stored: a group, proposal, dispute or PoH request."""
    return queries.SqliteState(conn).get(kind, key)


def group_view(
    conn: sqlite3.Connection, group_id: str, limit: int
) -> dict[str, Any] | None:
    state = queries.SqliteState(conn)
    group = state.get("group", group_id)
    if group is None:
        return None
    members = [
        key.split("/", 1)[1]
        for key, _ in state.scan("group_member", f"{group_id}/", limit=limit)
    ]
    requests = [
        key.split("/", 1)[1]
        for key, _ in state.scan("group_request", f"{group_id}/", limit=limit)
    ]
    return {**group, "members": members, "pending_requests": requests}


def media_status_view(conn: sqlite3.Connection, cid: str) -> dict[str, Any] | None:
    from weall.protocol.rules.storage import pin_id_for_cid, pin_status

    state = queries.SqliteState(conn)
    pin_id = pin_id_for_cid(state, cid)
    head = queries.head_header(conn)
    params = state.get("chain", "params")
    if pin_id is None or head is None or params is None:
        return None
    return pin_status(state, pin_id, head["height"] + 1, params)


def pin_view(conn: sqlite3.Connection, pin_id: str) -> dict[str, Any] | None:
    from weall.protocol.rules.storage import pin_status

    state = queries.SqliteState(conn)
    head = queries.head_header(conn)
    params = state.get("chain", "params")
    if head is None or params is None:
        return None
    return pin_status(state, pin_id, head["height"] + 1, params)
