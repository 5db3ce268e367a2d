"""Governance: proposals, votes, the tally at the close height and the economics lock."""

from __future__ import annotations

from typing import Any

import pytest
from chain_harness import GENESIS_TIME_MS, Chain, account_entry

from weall.protocol.params import DAY_MS

VOTERS = ["@voter1", "@voter2", "@voter3", "@voter4"]
PARAMS = {"gov_min_voting_blocks": 2, "gov_max_voting_blocks": 50}


@pytest.fixture
def chain() -> Chain:
    accounts = [account_entry(v, 2, balance=100) for v in VOTERS]
    accounts.append(account_entry("@tier1", 1))
    return Chain(accounts, PARAMS)


def propose(
    chain: Chain, action: dict[str, Any] | None = None, voting_blocks: int = 20
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "title": "Change",
        "body": "why",
        "voting_blocks": voting_blocks,
    }
    if action is not None:
        payload["action"] = action
    receipt = chain.ok("@voter1", "GOV_PROPOSAL_CREATE", payload)
    proposal = chain.get("gov_proposal", receipt["proposal_id"])
    assert proposal is not None
    return proposal


def change(key: str, value: Any) -> dict[str, Any]:
    return {"type": "param_change", "key": key, "value": value}


def proposal_payload(voting_blocks: int, action: dict[str, Any]) -> dict[str, Any]:
    return {"title": "t", "body": "", "voting_blocks": voting_blocks, "action": action}


def vote_in_next_block(
    chain: Chain, proposal_id: str, voters: list[str], choice: str
) -> None:
    """Queue a vote of each of ``voters``; the caller commits the block."""
    for voter in voters:
        payload = {"proposal_id": proposal_id, "choice": choice}
        chain.submit(voter, "GOV_VOTE_CAST", payload)


def vote(chain: Chain, voter: str, proposal_id: str, choice: str) -> None:
    chain.ok(voter, "GOV_VOTE_CAST", {"proposal_id": proposal_id, "choice": choice})


def proposal_of(chain: Chain, proposal_id: str) -> dict[str, Any]:
    proposal = chain.get("gov_proposal", proposal_id)
    assert proposal is not None
    return proposal


def test_create_records_close_height(chain: Chain) -> None:
    proposal = propose(chain, change("max_post_chars", 10), voting_blocks=5)
    assert proposal["height"] == chain.height
    assert proposal["close_height"] == chain.height + 5
    assert proposal["status"] == "open"
    assert proposal["tally"] == {"yes": 0, "no": 0, "abstain": 0}
    assert proposal["action"] == change("max_post_chars", 10)
    close_key = f"{proposal['close_height']:012d}.{proposal['id']}"
    assert chain.get("gov_close", close_key) == {"proposal_id": proposal["id"]}
    assert chain.blocks[-1].receipts[0]["close_height"] == proposal["close_height"]


@pytest.mark.parametrize(
    "payload",
    [
        {"title": "t", "body": "b", "voting_blocks": 1},
        {"title": "t", "body": "b", "voting_blocks": 51},
        {"title": "t", "body": "b", "voting_blocks": "3"},
        {"title": "", "body": "b", "voting_blocks": 3},
        {"title": "t" * 201, "body": "b", "voting_blocks": 3},
        {"title": "t", "voting_blocks": 3},
        {"title": "t", "body": "b", "voting_blocks": 3, "extra": True},
        {"title": "t", "body": "b", "voting_blocks": 3, "action": "raise"},
        {
            "title": "t",
            "body": "b",
            "voting_blocks": 3,
            "action": {"type": "param_change", "key": "max_post_chars"},
        },
        {
            "title": "t",
            "body": "b",
            "voting_blocks": 3,
            "action": {**change("max_post_chars", 9), "x": 1},
        },
        {
            "title": "t",
            "body": "b",
            "voting_blocks": 3,
            "action": {**change("max_post_chars", 9), "type": "spend"},
        },
        {
            "title": "t",
            "body": "b",
            "voting_blocks": 3,
            "action": change("no_such_param", 1),
        },
        {
            "title": "t",
            "body": "b",
            "voting_blocks": 3,
            "action": change("max_post_chars", 0),
        },
        {
            "title": "t",
            "body": "b",
            "voting_blocks": 3,
            "action": change("poh_async_threshold", 4),
        },
        {
            "title": "t",
            "body": "b",
            "voting_blocks": 3,
            "action": change("gates", {"FOLLOW_SET": 5}),
        },
        {
            "title": "t",
            "body": "b",
            "voting_blocks": 3,
            "action": change("gates", {"ACCOUNT_REGISTER": 1}),
        },
    ],
    ids=[
        "voting-short",
        "voting-long",
        "voting-text",
        "title-empty",
        "title-long",
        "body-missing",
        "unknown-field",
        "action-text",
        "action-no-value",
        "action-unknown-field",
        "action-type",
        "action-unknown-key",
        "action-out-of-range",
        "action-threshold-above-jurors",
        "action-bad-gate",
        "action-register-gate",
    ],
)
def test_create_rejects_payload(chain: Chain, payload: dict[str, Any]) -> None:
    chain.reject("@voter1", "GOV_PROPOSAL_CREATE", payload, "invalid_payload")


def test_create_needs_tier2(chain: Chain) -> None:
    payload = {"title": "t", "body": "b", "voting_blocks": 3}
    chain.reject("@tier1", "GOV_PROPOSAL_CREATE", payload, "tier_required")


@pytest.mark.parametrize(
    "action",
    [
        change("reward_amount", 20),
        change("economics_lock_days", 10),
        change("reward_interval_blocks", 5),
        change("gates", {"BALANCE_TRANSFER": 2}),
    ],
    ids=["reward-amount", "lock-days", "reward-interval", "economic-gate"],
)
def test_economic_action_locked(chain: Chain, action: dict[str, Any]) -> None:
    payload = {"title": "t", "body": "b", "voting_blocks": 3, "action": action}
    error = chain.reject("@voter1", "GOV_PROPOSAL_CREATE", payload, "economics_locked")
    assert error.details == {"unlock_at_ms": GENESIS_TIME_MS + 90 * DAY_MS}


def test_gate_change_of_non_economic_type_allowed(chain: Chain) -> None:
    proposal = propose(chain, change("gates", {"FOLLOW_SET": 2}))
    assert proposal["action"]["value"] == {"FOLLOW_SET": 2}


def test_vote_cast_change_and_repeat(chain: Chain) -> None:
    proposal = propose(chain)
    vote(chain, "@voter2", proposal["id"], "yes")
    assert proposal_of(chain, proposal["id"])["tally"] == {
        "yes": 1,
        "no": 0,
        "abstain": 0,
    }
    vote(chain, "@voter2", proposal["id"], "no")
    assert proposal_of(chain, proposal["id"])["tally"] == {
        "yes": 0,
        "no": 1,
        "abstain": 0,
    }
    assert chain.get("gov_vote", f"{proposal['id']}/@voter2") == {
        "choice": "no",
        "height": chain.height,
    }
    # Repeating the current choice is accepted and changes nothing but the nonce.
    vote(chain, "@voter2", proposal["id"], "no")
    assert [(k, key) for k, key, _ in chain.blocks[-1].changes] == [
        ("account", "@voter2")
    ]
    assert proposal_of(chain, proposal["id"])["tally"] == {
        "yes": 0,
        "no": 1,
        "abstain": 0,
    }


def test_vote_rejects(chain: Chain) -> None:
    proposal = propose(chain)
    pid = proposal["id"]
    chain.reject(
        "@voter2",
        "GOV_VOTE_CAST",
        {"proposal_id": pid, "choice": "maybe"},
        "invalid_payload",
    )
    chain.reject("@voter2", "GOV_VOTE_CAST", {"proposal_id": pid}, "invalid_payload")
    chain.reject(
        "@voter2",
        "GOV_VOTE_CAST",
        {"proposal_id": "b" + "q" * 52, "choice": "yes"},
        "not_found",
    )
    chain.reject(
        "@tier1",
        "GOV_VOTE_CAST",
        {"proposal_id": pid, "choice": "yes"},
        "tier_required",
    )


def test_vote_accepted_at_close_height_and_rejected_after(chain: Chain) -> None:
    proposal = propose(chain, voting_blocks=3)
    chain.advance_to(proposal["close_height"] - 1)
    for voter in VOTERS[:3]:
        chain.submit(
            voter, "GOV_VOTE_CAST", {"proposal_id": proposal["id"], "choice": "yes"}
        )
    receipts = chain.commit()
    assert chain.height == proposal["close_height"]
    assert all(r["ok"] for r in receipts)
    closed = proposal_of(chain, proposal["id"])
    assert closed["status"] == "passed"
    assert closed["outcome"] == {"votes": 3, "quorum": 3, "error": None}
    assert closed["closed_height"] == proposal["close_height"]
    error = chain.reject(
        "@voter4",
        "GOV_VOTE_CAST",
        {"proposal_id": proposal["id"], "choice": "no"},
        "conflict",
    )
    assert error.details["close_height"] == proposal["close_height"]
    assert chain.state.scan("gov_close") == []


def test_passed_param_change_applies_at_close_height(chain: Chain) -> None:
    proposal = propose(chain, change("max_post_chars", 10), voting_blocks=3)
    for voter, choice in zip(VOTERS, ["yes", "yes", "yes", "no"], strict=True):
        chain.submit(
            voter, "GOV_VOTE_CAST", {"proposal_id": proposal["id"], "choice": choice}
        )
    chain.commit()
    chain.advance_to(proposal["close_height"] - 1)
    assert chain.params["max_post_chars"] == 5000
    chain.commit()
    assert chain.height == proposal["close_height"]
    assert chain.params["max_post_chars"] == 10
    param_changes = [
        c for c in chain.blocks[-1].changes if c[:2] == ("chain", "params")
    ]
    assert len(param_changes) == 1
    assert proposal_of(chain, proposal["id"])["status"] == "passed"
    chain.reject(
        "@voter1", "CONTENT_POST_CREATE", {"body": "x" * 11}, "invalid_payload"
    )
    chain.ok("@voter1", "CONTENT_POST_CREATE", {"body": "x" * 10})


def test_no_quorum_leaves_params(chain: Chain) -> None:
    proposal = propose(chain, change("max_post_chars", 10), voting_blocks=2)
    vote(chain, "@voter2", proposal["id"], "yes")
    vote(chain, "@voter3", proposal["id"], "yes")
    chain.advance_to(proposal["close_height"])
    closed = proposal_of(chain, proposal["id"])
    assert closed["status"] == "no_quorum"
    assert closed["outcome"] == {"votes": 2, "quorum": 3, "error": None}
    assert chain.params["max_post_chars"] == 5000


def test_abstentions_count_toward_quorum(chain: Chain) -> None:
    proposal = propose(chain, change("max_post_chars", 10), voting_blocks=4)
    vote(chain, "@voter2", proposal["id"], "yes")
    vote(chain, "@voter3", proposal["id"], "abstain")
    vote(chain, "@voter4", proposal["id"], "abstain")
    chain.advance_to(proposal["close_height"])
    assert proposal_of(chain, proposal["id"])["status"] == "passed"
    assert chain.params["max_post_chars"] == 10


def test_tie_is_rejected(chain: Chain) -> None:
    proposal = propose(chain, change("max_post_chars", 10), voting_blocks=5)
    vote(chain, "@voter1", proposal["id"], "yes")
    vote(chain, "@voter2", proposal["id"], "yes")
    vote(chain, "@voter3", proposal["id"], "no")
    vote(chain, "@voter4", proposal["id"], "no")
    chain.advance_to(proposal["close_height"])
    assert proposal_of(chain, proposal["id"])["status"] == "rejected"
    assert chain.params["max_post_chars"] == 5000


def test_proposal_without_action_passes(chain: Chain) -> None:
    proposal = propose(chain, voting_blocks=4)
    for voter in VOTERS[:3]:
        vote(chain, voter, proposal["id"], "yes")
    before = chain.params
    chain.advance_to(proposal["close_height"])
    assert proposal_of(chain, proposal["id"])["status"] == "passed"
    assert chain.params == before


def test_conflicting_changes_at_one_height_fail_second(chain: Chain) -> None:
    # Each change is valid alone, but together the threshold would exceed the jurors.
    fewer_jurors = proposal_payload(4, change("poh_async_jurors", 2))
    higher_threshold = proposal_payload(4, change("poh_async_threshold", 3))
    chain.submit("@voter1", "GOV_PROPOSAL_CREATE", fewer_jurors)
    chain.submit("@voter2", "GOV_PROPOSAL_CREATE", higher_threshold)
    ids = sorted(r["proposal_id"] for r in chain.commit())
    for proposal_id in ids:
        vote_in_next_block(chain, proposal_id, VOTERS[:3], "yes")
    chain.commit()

    chain.advance_to(proposal_of(chain, ids[0])["close_height"])
    first, second = proposal_of(chain, ids[0]), proposal_of(chain, ids[1])
    assert first["status"] == "passed"
    assert second["status"] == "failed"
    assert second["outcome"]["error"] == "invalid_payload"
    params = chain.params
    assert params["poh_async_threshold"] <= params["poh_async_jurors"]


def test_economics_unlock_both_sides_on_one_chain() -> None:
    unlock_at = GENESIS_TIME_MS + 90 * DAY_MS
    accounts = [account_entry(v, 2, balance=100) for v in VOTERS]
    accounts.append(account_entry("@rewards", 0, balance=100))
    chain = Chain(accounts, PARAMS)
    chain.next_timestamp_ms = unlock_at - 3000
    economic = {
        "title": "more reward",
        "body": "",
        "voting_blocks": 5,
        "action": change("reward_amount", 25),
    }
    error = chain.reject("@voter1", "GOV_PROPOSAL_CREATE", economic, "economics_locked")
    assert error.details == {"unlock_at_ms": unlock_at}
    transfer = {"to": "@voter2", "amount": 5}
    chain.reject("@voter1", "BALANCE_TRANSFER", transfer, "economics_locked")
    # Blocks advance 1 s each: at unlock_at - 1000 still locked, then open.
    chain.reject("@voter1", "REWARD_CLAIM", {}, "economics_locked")
    assert chain.next_timestamp_ms == unlock_at
    chain.ok("@voter1", "BALANCE_TRANSFER", transfer)
    assert chain.account("@voter1")["balance"] == 95
    assert chain.account("@voter2")["balance"] == 105
    receipt = chain.ok("@voter1", "GOV_PROPOSAL_CREATE", economic)
    proposal_id = receipt["proposal_id"]
    for voter in VOTERS[:3]:
        vote(chain, voter, proposal_id, "yes")
    chain.advance_to(proposal_of(chain, proposal_id)["close_height"])
    assert proposal_of(chain, proposal_id)["status"] == "passed"
    assert chain.params["reward_amount"] == 25
    assert chain.ok("@voter4", "REWARD_CLAIM", {})["amount"] == 25
    assert chain.account("@rewards")["balance"] == 75
    assert chain.account("@voter4")["balance"] == 125


def test_economic_action_fails_when_relocked_before_close() -> None:
    accounts = [account_entry(v, 2) for v in VOTERS]
    chain = Chain(accounts, {**PARAMS, "economics_lock_days": 0})
    relock_payload = proposal_payload(2, change("economics_lock_days", 36_500))
    reward_payload = proposal_payload(4, change("reward_amount", 99))
    relock = chain.ok("@voter1", "GOV_PROPOSAL_CREATE", relock_payload)["proposal_id"]
    reward = chain.ok("@voter2", "GOV_PROPOSAL_CREATE", reward_payload)["proposal_id"]
    for proposal_id in (relock, reward):
        vote_in_next_block(chain, proposal_id, VOTERS[:3], "yes")
    chain.commit()

    chain.advance_to(proposal_of(chain, reward)["close_height"])
    assert proposal_of(chain, relock)["status"] == "passed"
    assert chain.params["economics_lock_days"] == 36_500
    failed = proposal_of(chain, reward)
    assert failed["status"] == "failed"
    assert failed["outcome"]["error"] == "economics_locked"
    assert chain.params["reward_amount"] == 10
