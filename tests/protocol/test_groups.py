"""Groups: creation, open and approval membership, admin decisions, group posts."""

from __future__ import annotations

from typing import Any

import pytest
from chain_harness import Chain, account_entry

from weall.protocol.rules.groups import is_group_admin, is_member


@pytest.fixture
def chain() -> Chain:
    return Chain(
        [
            account_entry("@admin", 2),
            account_entry("@alice", 2),
            account_entry("@bob", 1),
            account_entry("@carol", 0),
        ]
    )


def create(chain: Chain, group_id: str, policy: str) -> dict[str, Any]:
    payload = {"group_id": group_id, "name": f"Group {group_id}", "policy": policy}
    return chain.ok("@admin", "GROUP_CREATE", payload)


def test_create_makes_creator_admin_and_member(chain: Chain) -> None:
    receipt = create(chain, "garden-club", "open")
    assert receipt == {"ok": True, "group_id": "garden-club"}
    group = chain.get("group", "garden-club")
    assert group is not None
    assert group["admins"] == ["@admin"]
    assert group["policy"] == "open"
    assert group["member_count"] == 1
    assert chain.get("group_member", "garden-club/@admin") == {
        "role": "admin",
        "since_height": chain.height,
    }
    assert is_group_admin(chain.state, "garden-club", "@admin")
    assert chain.get("counter", "groups") == {"n": 1}


@pytest.mark.parametrize(
    "payload",
    [
        {"group_id": "ab", "name": "x", "policy": "open"},
        {"group_id": "Upper", "name": "x", "policy": "open"},
        {"group_id": "a" * 33, "name": "x", "policy": "open"},
        {"group_id": "good_id", "name": "", "policy": "open"},
        {"group_id": "good_id", "name": "x" * 101, "policy": "open"},
        {"group_id": "good_id", "name": "x", "policy": "closed"},
        {"group_id": "good_id", "name": "x"},
        {"group_id": "good_id", "name": "x", "policy": "open", "extra": 1},
    ],
    ids=[
        "id-short",
        "id-upper",
        "id-long",
        "name-empty",
        "name-long",
        "bad-policy",
        "missing-policy",
        "unknown-field",
    ],
)
def test_create_rejects_payload(chain: Chain, payload: dict[str, Any]) -> None:
    chain.reject("@admin", "GROUP_CREATE", payload, "invalid_payload")


def test_create_rejects_taken_id(chain: Chain) -> None:
    create(chain, "garden", "open")
    payload = {"group_id": "garden", "name": "Other", "policy": "approval"}
    chain.reject("@alice", "GROUP_CREATE", payload, "conflict")


def test_create_needs_tier2(chain: Chain) -> None:
    payload = {"group_id": "garden", "name": "G", "policy": "open"}
    chain.reject("@bob", "GROUP_CREATE", payload, "tier_required")


def test_open_group_admits_at_once(chain: Chain) -> None:
    create(chain, "open-group", "open")
    receipt = chain.ok("@bob", "GROUP_MEMBERSHIP_REQUEST", {"group_id": "open-group"})
    assert receipt["status"] == "member"
    assert is_member(chain.state, "open-group", "@bob")
    assert not is_group_admin(chain.state, "open-group", "@bob")
    chain.reject(
        "@bob", "GROUP_MEMBERSHIP_REQUEST", {"group_id": "open-group"}, "conflict"
    )
    group = chain.get("group", "open-group")
    assert group is not None
    assert group["member_count"] == 2


def test_membership_request_rejects(chain: Chain) -> None:
    chain.reject(
        "@bob", "GROUP_MEMBERSHIP_REQUEST", {"group_id": "missing"}, "not_found"
    )
    chain.reject(
        "@bob", "GROUP_MEMBERSHIP_REQUEST", {"group_id": "!"}, "invalid_payload"
    )
    chain.reject("@bob", "GROUP_MEMBERSHIP_REQUEST", {}, "invalid_payload")
    create(chain, "club", "open")
    chain.reject(
        "@carol", "GROUP_MEMBERSHIP_REQUEST", {"group_id": "club"}, "tier_required"
    )
    chain.reject("@admin", "GROUP_MEMBERSHIP_REQUEST", {"group_id": "club"}, "conflict")


def test_approval_group_request_and_approve(chain: Chain) -> None:
    create(chain, "closed", "approval")
    receipt = chain.ok("@bob", "GROUP_MEMBERSHIP_REQUEST", {"group_id": "closed"})
    assert receipt["status"] == "pending"
    assert not is_member(chain.state, "closed", "@bob")
    assert chain.get("group_request", "closed/@bob") is not None
    chain.reject("@bob", "GROUP_MEMBERSHIP_REQUEST", {"group_id": "closed"}, "conflict")
    decide = {"group_id": "closed", "account": "@bob", "approve": True}
    receipt = chain.ok("@admin", "GROUP_MEMBERSHIP_DECIDE", decide)
    assert receipt == {
        "ok": True,
        "group_id": "closed",
        "account": "@bob",
        "approved": True,
    }
    assert is_member(chain.state, "closed", "@bob")
    assert chain.get("group_request", "closed/@bob") is None
    chain.reject("@admin", "GROUP_MEMBERSHIP_DECIDE", decide, "not_found")


def test_approval_group_reject_drops_request(chain: Chain) -> None:
    create(chain, "closed", "approval")
    chain.ok("@bob", "GROUP_MEMBERSHIP_REQUEST", {"group_id": "closed"})
    decide = {"group_id": "closed", "account": "@bob", "approve": False}
    assert chain.ok("@admin", "GROUP_MEMBERSHIP_DECIDE", decide)["approved"] is False
    assert not is_member(chain.state, "closed", "@bob")
    assert chain.get("group_request", "closed/@bob") is None
    # A rejected account may ask again.
    assert (
        chain.ok("@bob", "GROUP_MEMBERSHIP_REQUEST", {"group_id": "closed"})["status"]
        == "pending"
    )


def test_decide_needs_group_admin(chain: Chain) -> None:
    create(chain, "closed", "approval")
    chain.ok("@alice", "GROUP_MEMBERSHIP_REQUEST", {"group_id": "closed"})
    chain.ok(
        "@admin",
        "GROUP_MEMBERSHIP_DECIDE",
        {"group_id": "closed", "account": "@alice", "approve": True},
    )
    chain.ok("@bob", "GROUP_MEMBERSHIP_REQUEST", {"group_id": "closed"})
    decide = {"group_id": "closed", "account": "@bob", "approve": True}
    member_error = chain.reject(
        "@alice", "GROUP_MEMBERSHIP_DECIDE", decide, "role_required"
    )
    assert member_error.details == {
        "required_role": "group_admin",
        "group_id": "closed",
    }
    chain.reject("@carol", "GROUP_MEMBERSHIP_DECIDE", decide, "role_required")
    assert not is_member(chain.state, "closed", "@bob")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"group_id": "missing", "account": "@bob", "approve": True}, "not_found"),
        ({"group_id": "closed", "account": "bob", "approve": True}, "invalid_payload"),
        (
            {"group_id": "closed", "account": "@bob", "approve": "yes"},
            "invalid_payload",
        ),
        ({"group_id": "closed", "account": "@bob"}, "invalid_payload"),
        ({"group_id": "closed", "account": "@carol", "approve": True}, "not_found"),
    ],
    ids=[
        "unknown-group",
        "bad-account",
        "bad-approve",
        "missing-approve",
        "no-request",
    ],
)
def test_decide_rejects_payload(
    chain: Chain, payload: dict[str, Any], code: str
) -> None:
    create(chain, "closed", "approval")
    chain.reject("@admin", "GROUP_MEMBERSHIP_DECIDE", payload, code)


def test_group_posts_need_membership(chain: Chain) -> None:
    create(chain, "writers", "approval")
    post = {"body": "hello writers", "group_id": "writers"}
    chain.reject("@alice", "CONTENT_POST_CREATE", post, "role_required")
    chain.ok("@alice", "GROUP_MEMBERSHIP_REQUEST", {"group_id": "writers"})
    chain.ok(
        "@admin",
        "GROUP_MEMBERSHIP_DECIDE",
        {"group_id": "writers", "account": "@alice", "approve": True},
    )
    receipt = chain.ok("@alice", "CONTENT_POST_CREATE", post)
    stored = chain.get("post", receipt["post_id"])
    assert stored is not None
    assert stored["group_id"] == "writers"
