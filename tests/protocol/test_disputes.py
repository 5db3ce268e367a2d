"""Disputes over posts and comments: assignment, majority votes, hiding and expiry."""

from __future__ import annotations

from typing import Any

import pytest
from chain_harness import Chain, account_entry

from weall.protocol.rules._assign import juror_tasks

JURORS = [f"@juror{i}" for i in range(1, 6)]


@pytest.fixture
def chain() -> Chain:
    accounts = [account_entry(j, 2, ["juror"]) for j in JURORS]
    accounts += [account_entry("@author", 2), account_entry("@opener", 2)]
    return Chain(accounts)


def post(chain: Chain, author: str = "@author") -> str:
    return str(chain.ok(author, "CONTENT_POST_CREATE", {"body": "a post"})["post_id"])


def open_dispute(
    chain: Chain, target_id: str, opener: str = "@opener"
) -> dict[str, Any]:
    receipt = chain.ok(
        opener, "DISPUTE_OPEN", {"target_id": target_id, "reason": "spam"}
    )
    dispute = chain.get("dispute", receipt["dispute_id"])
    assert dispute is not None
    return dispute


def vote(chain: Chain, juror: str, dispute_id: str, verdict: str) -> dict[str, Any]:
    payload = {"dispute_id": dispute_id, "verdict": verdict}
    return chain.ok(juror, "DISPUTE_VOTE_SUBMIT", payload)


def hidden(chain: Chain, kind: str, target_id: str) -> bool:
    target = chain.get(kind, target_id)
    assert target is not None
    return bool(target["hidden"])


def test_open_assigns_jurors_excluding_author_and_opener() -> None:
    # Both the author and the opener are jurors, so exactly three are eligible.
    accounts = [account_entry(j, 2, ["juror"]) for j in JURORS]
    chain = Chain(accounts)
    target = post(chain, "@juror1")
    dispute = open_dispute(chain, target, "@juror2")
    assert sorted(dispute["jurors"]) == ["@juror3", "@juror4", "@juror5"]
    assert dispute["target_kind"] == "post"
    assert dispute["target_author"] == "@juror1"
    assert dispute["status"] == "open"
    assert chain.get("dispute_open", target) == {"dispute_id": dispute["id"]}
    for juror in dispute["jurors"]:
        assert [t["id"] for t in juror_tasks(chain.state, juror)] == [dispute["id"]]


def test_open_insufficient_jurors() -> None:
    accounts = [account_entry(j, 2, ["juror"]) for j in JURORS[:4]]
    chain = Chain(accounts)
    target = post(chain, "@juror1")
    payload = {"target_id": target, "reason": "spam"}
    error = chain.reject("@juror2", "DISPUTE_OPEN", payload, "insufficient_jurors")
    assert error.details == {"required": 3, "eligible": 2}


def test_uphold_majority_hides_post(chain: Chain) -> None:
    target = post(chain)
    dispute = open_dispute(chain, target)
    first, second, third = dispute["jurors"]
    assert vote(chain, first, dispute["id"], "uphold")["status"] == "open"
    assert not hidden(chain, "post", target)
    assert vote(chain, second, dispute["id"], "uphold")["status"] == "upheld"
    assert hidden(chain, "post", target)
    assert chain.get("dispute_open", target) is None
    assert juror_tasks(chain.state, third) == []
    payload = {"dispute_id": dispute["id"], "verdict": "dismiss"}
    chain.reject(third, "DISPUTE_VOTE_SUBMIT", payload, "conflict")
    # A hidden post takes no comments or reactions.
    comment = {"parent_id": target, "body": "hi"}
    chain.reject("@opener", "CONTENT_COMMENT_CREATE", comment, "conflict")


def test_dismiss_clears_hidden_on_appeal(chain: Chain) -> None:
    target = post(chain)
    dispute = open_dispute(chain, target)
    for juror in dispute["jurors"][:2]:
        vote(chain, juror, dispute["id"], "uphold")
    assert hidden(chain, "post", target)
    appeal = open_dispute(chain, target, "@author")
    first, second, _ = appeal["jurors"]
    vote(chain, first, appeal["id"], "dismiss")
    assert vote(chain, second, appeal["id"], "dismiss")["status"] == "dismissed"
    assert not hidden(chain, "post", target)


def test_dispute_on_comment(chain: Chain) -> None:
    target = post(chain)
    comment_id = chain.ok(
        "@author", "CONTENT_COMMENT_CREATE", {"parent_id": target, "body": "c"}
    )["comment_id"]
    dispute = open_dispute(chain, comment_id)
    assert dispute["target_kind"] == "comment"
    for juror in dispute["jurors"][:2]:
        vote(chain, juror, dispute["id"], "uphold")
    assert hidden(chain, "comment", comment_id)
    assert not hidden(chain, "post", target)


def test_no_majority_with_even_jurors() -> None:
    accounts = [account_entry(j, 2, ["juror"]) for j in JURORS]
    accounts += [account_entry("@author", 2), account_entry("@opener", 2)]
    chain = Chain(accounts, {"dispute_jurors": 4})
    target = post(chain)
    dispute = open_dispute(chain, target)
    j1, j2, j3, j4 = dispute["jurors"]
    vote(chain, j1, dispute["id"], "uphold")
    vote(chain, j2, dispute["id"], "dismiss")
    assert vote(chain, j3, dispute["id"], "uphold")["status"] == "open"
    assert vote(chain, j4, dispute["id"], "dismiss")["status"] == "no_majority"
    assert not hidden(chain, "post", target)
    assert chain.get("dispute_open", target) is None


def test_open_rejects(chain: Chain) -> None:
    target = post(chain)
    chain.reject("@opener", "DISPUTE_OPEN", {"target_id": target}, "invalid_payload")
    chain.reject(
        "@opener",
        "DISPUTE_OPEN",
        {"target_id": target, "reason": ""},
        "invalid_payload",
    )
    chain.reject(
        "@opener",
        "DISPUTE_OPEN",
        {"target_id": target, "reason": "x" * 501},
        "invalid_payload",
    )
    chain.reject(
        "@opener",
        "DISPUTE_OPEN",
        {"target_id": "nope", "reason": "x"},
        "invalid_payload",
    )
    chain.reject(
        "@opener",
        "DISPUTE_OPEN",
        {"target_id": target, "reason": "x", "y": 1},
        "invalid_payload",
    )
    chain.reject(
        "@opener",
        "DISPUTE_OPEN",
        {"target_id": "b" + "a" * 52, "reason": "x"},
        "not_found",
    )
    dispute = open_dispute(chain, target)
    error = chain.reject(
        "@opener", "DISPUTE_OPEN", {"target_id": target, "reason": "x"}, "conflict"
    )
    assert error.details == {"dispute_id": dispute["id"]}


def test_open_rejects_deleted_target(chain: Chain) -> None:
    target = post(chain)
    chain.ok("@author", "CONTENT_POST_DELETE", {"post_id": target})
    chain.reject(
        "@opener", "DISPUTE_OPEN", {"target_id": target, "reason": "x"}, "conflict"
    )


def test_vote_rejects(chain: Chain) -> None:
    target = post(chain)
    dispute = open_dispute(chain, target)
    juror = dispute["jurors"][0]
    outsider = next(j for j in JURORS if j not in dispute["jurors"])
    payload = {"dispute_id": dispute["id"], "verdict": "uphold"}
    chain.reject(outsider, "DISPUTE_VOTE_SUBMIT", payload, "not_assigned")
    chain.reject("@opener", "DISPUTE_VOTE_SUBMIT", payload, "role_required")
    chain.reject(
        juror, "DISPUTE_VOTE_SUBMIT", {**payload, "verdict": "hide"}, "invalid_payload"
    )
    chain.reject(juror, "DISPUTE_VOTE_SUBMIT", {"verdict": "uphold"}, "invalid_payload")
    chain.reject(
        juror,
        "DISPUTE_VOTE_SUBMIT",
        {**payload, "dispute_id": "b" + "a" * 52},
        "not_found",
    )
    vote(chain, juror, dispute["id"], "uphold")
    chain.reject(juror, "DISPUTE_VOTE_SUBMIT", payload, "conflict")
    chain.reject(
        juror, "DISPUTE_VOTE_SUBMIT", {**payload, "verdict": "dismiss"}, "conflict"
    )


def test_dispute_expires() -> None:
    accounts = [account_entry(j, 2, ["juror"]) for j in JURORS]
    accounts += [account_entry("@author", 2), account_entry("@opener", 2)]
    chain = Chain(accounts, {"dispute_expiry_blocks": 3})
    target = post(chain)
    dispute = open_dispute(chain, target)
    vote(chain, dispute["jurors"][0], dispute["id"], "uphold")
    chain.advance_to(dispute["expires_at_height"])
    stored = chain.get("dispute", dispute["id"])
    assert stored is not None
    assert stored["status"] == "expired"
    assert stored["closed_height"] == dispute["expires_at_height"]
    assert not hidden(chain, "post", target)
    assert chain.get("dispute_open", target) is None
    assert chain.state.scan("dispute_expiry") == []
    assert chain.state.scan("juror_task") == []
    # The target can be disputed again.
    assert open_dispute(chain, target)["status"] == "open"
