"""Hidden and deleted posts and comments over HTTP: no route shows their bodies.

On the shared live node, ``@node`` writes a post and a comment, opens a
dispute over each, and the founder (the only eligible juror) upholds both,
which hides them. The founder also deletes a post and a comment of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from weall.api import schemas

from ._live import World, commit_all, envelope, next_nonce

pytestmark = pytest.mark.slow

REDACTED_KEYS = {
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
    "status",
}
HIDDEN_POST_BODY = "hidden post body 7f3a"
DELETED_POST_BODY = "deleted post body 91c2"
HIDDEN_COMMENT_BODY = "hidden comment body 44d0"
DELETED_COMMENT_BODY = "deleted comment body 0be6"
VISIBLE_COMMENT_BODY = "visible comment body 5e19"
SECRET_BODIES = (
    HIDDEN_POST_BODY,
    DELETED_POST_BODY,
    HIDDEN_COMMENT_BODY,
    DELETED_COMMENT_BODY,
)


@dataclass
class Content:
    """The ids of the objects this module creates."""

    hidden_post: str
    deleted_post: str
    thread: str
    hidden_comment: str
    deleted_comment: str
    visible_comment: str
    disputes: list[str]


class _Signers:
    """Envelopes of the founder and the node with consecutive nonces."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.nonces = {
            "@founder": next_nonce(world.node, "@founder"),
            "@node": next_nonce(world.node, "@node"),
        }

    def tx(self, signer: str, tx_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        key = self.world.founder if signer == "@founder" else self.world.producer
        nonce = self.nonces[signer]
        self.nonces[signer] += 1
        return envelope(self.world, key, tx_type, payload, nonce)


@pytest.fixture(scope="module")
def content(world: World) -> Content:
    signers = _Signers(world)
    tx = signers.tx
    posts = commit_all(
        world.node,
        [
            tx("@node", "CONTENT_POST_CREATE", {"body": HIDDEN_POST_BODY}),
            tx("@founder", "CONTENT_POST_CREATE", {"body": DELETED_POST_BODY}),
            tx("@founder", "CONTENT_POST_CREATE", {"body": "a thread"}),
        ],
    )
    hidden_post, deleted_post, thread = (r["post_id"] for r in posts)
    comments = commit_all(
        world.node,
        [
            tx(
                "@node",
                "CONTENT_COMMENT_CREATE",
                {"parent_id": thread, "body": HIDDEN_COMMENT_BODY},
            ),
            tx(
                "@founder",
                "CONTENT_COMMENT_CREATE",
                {"parent_id": thread, "body": DELETED_COMMENT_BODY},
            ),
            tx(
                "@founder",
                "CONTENT_COMMENT_CREATE",
                {"parent_id": thread, "body": VISIBLE_COMMENT_BODY},
            ),
            tx("@founder", "CONTENT_POST_DELETE", {"post_id": deleted_post}),
        ],
    )
    hidden_comment, deleted_comment, visible_comment = (
        r["comment_id"] for r in comments[:3]
    )
    opened = commit_all(
        world.node,
        [
            tx("@founder", "CONTENT_COMMENT_DELETE", {"comment_id": deleted_comment}),
            tx("@node", "DISPUTE_OPEN", {"target_id": hidden_post, "reason": "spam"}),
            tx(
                "@node",
                "DISPUTE_OPEN",
                {"target_id": hidden_comment, "reason": "spam"},
            ),
        ],
    )
    disputes = [r["dispute_id"] for r in opened[1:]]
    votes = commit_all(
        world.node,
        [
            tx(
                "@founder",
                "DISPUTE_VOTE_SUBMIT",
                {"dispute_id": dispute, "verdict": "uphold"},
            )
            for dispute in disputes
        ],
    )
    assert [v["status"] for v in votes] == ["upheld", "upheld"]
    return Content(
        hidden_post=hidden_post,
        deleted_post=deleted_post,
        thread=thread,
        hidden_comment=hidden_comment,
        deleted_comment=deleted_comment,
        visible_comment=visible_comment,
        disputes=disputes,
    )


def _get(world: World, path: str) -> dict[str, Any]:
    response = world.node.get(path)
    assert response.status_code == 200, (path, response.text)
    for body in SECRET_BODIES:
        assert body not in response.text, (path, body)
    document: dict[str, Any] = response.json()
    return document


def test_disputes_upheld(world: World, content: Content) -> None:
    for dispute in content.disputes:
        assert _get(world, f"/v1/disputes/{dispute}")["status"] == "upheld"


@pytest.mark.parametrize(
    ("name", "kind", "author", "status"),
    [
        ("hidden_post", "post", "@node", "hidden"),
        ("deleted_post", "post", "@founder", "deleted"),
        ("hidden_comment", "comment", "@node", "hidden"),
        ("deleted_comment", "comment", "@founder", "deleted"),
    ],
)
def test_redacted_item_shows_no_body(
    world: World, content: Content, name: str, kind: str, author: str, status: str
) -> None:
    object_id = getattr(content, name)
    view = _get(world, f"/v1/content/{object_id}")
    assert view["id"] == object_id
    assert view["kind"] == kind
    assert view["author"] == author
    assert view["status"] == status
    assert set(view) <= REDACTED_KEYS
    assert "body" not in view
    assert "media" not in view
    assert "comments" not in view
    if kind == "comment":
        assert view["post_id"] == content.thread
    # The response matches the documented model of a redacted item.
    parsed = schemas.ContentView.model_validate(view).root
    assert isinstance(parsed, schemas.RedactedContent)


def test_thread_lists_only_visible_comments(world: World, content: Content) -> None:
    view = _get(world, f"/v1/content/{content.thread}?limit=100")
    assert view["status"] == "visible"
    assert view["body"] == "a thread"
    assert [c["id"] for c in view["comments"]] == [content.visible_comment]
    (comment,) = view["comments"]
    assert comment["body"] == VISIBLE_COMMENT_BODY
    assert comment["status"] == "visible"
    parsed = schemas.ContentView.model_validate(view).root
    assert isinstance(parsed, schemas.PostWithComments)


def test_thread_pages_skip_redacted_comments(world: World, content: Content) -> None:
    seen: list[str] = []
    path = f"/v1/content/{content.thread}?limit=1"
    for _ in range(10):
        view = _get(world, path)
        seen += [c["id"] for c in view["comments"]]
        if view["next_cursor"] is None:
            break
        path = f"/v1/content/{content.thread}?limit=1&cursor={view['next_cursor']}"
    assert seen == [content.visible_comment]


def test_feed_leaves_out_hidden_and_deleted(world: World, content: Content) -> None:
    items = _get(world, "/v1/feed?limit=100")["items"]
    ids = [item["id"] for item in items]
    assert content.thread in ids
    assert content.hidden_post not in ids
    assert content.deleted_post not in ids
    assert all(item["status"] == "visible" for item in items)
    schemas.FeedPage.model_validate({"items": items, "next_cursor": None})


def test_account_posts_leave_out_hidden_and_deleted(
    world: World, content: Content
) -> None:
    node_posts = _get(world, "/v1/accounts/@node/posts?limit=100")["items"]
    assert content.hidden_post not in [item["id"] for item in node_posts]
    founder_posts = _get(world, "/v1/accounts/@founder/posts?limit=100")["items"]
    founder_ids = [item["id"] for item in founder_posts]
    assert content.thread in founder_ids
    assert content.deleted_post not in founder_ids
