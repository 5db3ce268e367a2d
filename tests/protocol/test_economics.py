"""Economics on both sides of the unlock, on one chain.

The genesis funds a reward pool (``@rewards``) and a treasury
(``@treasury``). Before the unlock every economic type is locked. After it,
transfers move balances, rewards come out of the pool until it runs dry,
and a treasury spend moves funds only once its proposal passes with quorum.
The sum of all balances never changes, and a replay from genesis gives the
same blocks.
"""

from __future__ import annotations

from typing import Any

import pytest
from chain_harness import GENESIS_TIME_MS, Chain, account_entry

from weall.errors import ProtocolError
from weall.protocol.params import DAY_MS, merge_params

VOTERS = ["@voter1", "@voter2", "@voter3"]
PARAMS = {
    "economics_lock_days": 1,
    "reward_amount": 10,
    "reward_interval_blocks": 3,
    "treasury_voting_blocks": 4,
    "gov_quorum": 2,
    "gov_min_voting_blocks": 1,
}
UNLOCK_AT = GENESIS_TIME_MS + DAY_MS
SUPPLY = 1000 + 25 + 500


def _accounts() -> list[dict[str, Any]]:
    accounts = [account_entry("@alice", 2, balance=1000)]
    accounts += [account_entry(v, 2) for v in VOTERS]
    accounts.append(account_entry("@bob", 1))
    accounts.append(account_entry("@rewards", 0, balance=25))
    accounts.append(account_entry("@treasury", 0, balance=500))
    return accounts


def _balance(chain: Chain, account_id: str) -> int:
    return int(chain.account(account_id)["balance"])


def _supply(chain: Chain) -> int:
    return sum(
        value["balance"]
        for (kind, _), value in chain.state.entries.items()
        if kind == "account"
    )


def _spend(chain: Chain, amount: int, to: str = "@bob") -> str:
    payload = {"to": to, "amount": amount, "memo": f"pay {amount}"}
    receipt = chain.ok("@alice", "TREASURY_SPEND_PROPOSE", payload)
    return str(receipt["proposal_id"])


def _vote(
    chain: Chain, proposal_ids: list[str], voters: list[str], choice: str
) -> None:
    """Cast the votes of ``voters`` on each proposal, all in one block."""
    for proposal_id in proposal_ids:
        for voter in voters:
            payload = {"proposal_id": proposal_id, "choice": choice}
            chain.submit(voter, "GOV_VOTE_CAST", payload)
    chain.commit()


def _proposal(chain: Chain, proposal_id: str) -> dict[str, Any]:
    proposal = chain.get("gov_proposal", proposal_id)
    assert proposal is not None
    return proposal


def test_economics_both_sides_of_unlock() -> None:
    chain = Chain(_accounts(), PARAMS)
    assert _supply(chain) == SUPPLY

    # Locked: each economic type fails at admission and in a block.
    transfer = {"to": "@bob", "amount": 100}
    spend = {"to": "@bob", "amount": 100, "memo": ""}
    for signer, tx_type, payload in (
        ("@alice", "BALANCE_TRANSFER", transfer),
        ("@bob", "REWARD_CLAIM", {}),
        ("@alice", "TREASURY_SPEND_PROPOSE", spend),
    ):
        error = chain.reject(signer, tx_type, payload, "economics_locked")
        assert error.details == {"unlock_at_ms": UNLOCK_AT}
    assert _balance(chain, "@alice") == 1000
    assert _balance(chain, "@rewards") == 25
    assert _balance(chain, "@treasury") == 500
    assert chain.get("counter", "proposals") is None

    # The block after this one is timestamped a day later, past the unlock.
    chain.commit(advance_ms=DAY_MS)
    assert chain.next_timestamp_ms >= UNLOCK_AT

    chain.ok("@alice", "BALANCE_TRANSFER", transfer)
    assert _balance(chain, "@alice") == 900
    assert _balance(chain, "@bob") == 100

    # Rewards come from the pool of 25: two rewards of 10, then it is empty.
    assert chain.ok("@bob", "REWARD_CLAIM", {})["amount"] == 10
    chain.reject("@bob", "REWARD_CLAIM", {}, "conflict")
    assert chain.ok("@voter1", "REWARD_CLAIM", {})["amount"] == 10
    assert _balance(chain, "@rewards") == 5
    error = chain.reject("@voter2", "REWARD_CLAIM", {}, "reward_pool_empty")
    assert error.details == {"pool": "@rewards", "balance": 5, "reward_amount": 10}
    assert _balance(chain, "@rewards") == 5
    assert _balance(chain, "@voter2") == 0
    assert _balance(chain, "@bob") == 110

    # A spend with quorum and a yes majority pays at its close, not before.
    passed = _spend(chain, 300)
    assert _balance(chain, "@treasury") == 500
    _vote(chain, [passed], VOTERS[:2], "yes")
    chain.advance_to(_proposal(chain, passed)["close_height"])
    assert _proposal(chain, passed)["status"] == "passed"
    assert _proposal(chain, passed)["outcome"]["error"] is None
    assert _balance(chain, "@treasury") == 200
    assert _balance(chain, "@bob") == 410

    # A spend above the treasury's balance is rejected when it is proposed.
    error = chain.reject(
        "@alice",
        "TREASURY_SPEND_PROPOSE",
        {"to": "@bob", "amount": 201, "memo": ""},
        "insufficient_balance",
    )
    assert error.details == {"balance": 200}

    # Two spends of 150 fit when proposed, but only the first fits at the
    # close: proposals closing together are tallied in id order.
    spends = [
        chain.submit(
            "@alice", "TREASURY_SPEND_PROPOSE", {"to": to, "amount": 150, "memo": ""}
        )
        for to in VOTERS[1:]
    ]
    chain.commit()
    first, second = sorted(env.tx_id for env in spends)
    assert _proposal(chain, first)["close_height"] == chain.height + 4
    _vote(chain, [first, second], VOTERS[:2], "yes")
    chain.advance_to(_proposal(chain, first)["close_height"])
    assert _proposal(chain, first)["status"] == "passed"
    assert _proposal(chain, second)["status"] == "failed"
    assert _proposal(chain, second)["outcome"]["error"] == "insufficient_balance"
    assert _balance(chain, "@treasury") == 50

    # Without quorum, or with a no majority, nothing moves.
    no_quorum = _spend(chain, 10)
    _vote(chain, [no_quorum], VOTERS[:1], "yes")
    rejected = _spend(chain, 10)
    _vote(chain, [rejected], VOTERS[:2], "no")
    chain.advance_to(_proposal(chain, rejected)["close_height"])
    assert _proposal(chain, no_quorum)["close_height"] < chain.height
    assert _proposal(chain, no_quorum)["status"] == "no_quorum"
    assert _proposal(chain, rejected)["status"] == "rejected"
    assert _balance(chain, "@treasury") == 50

    assert _supply(chain) == SUPPLY
    chain.replay()


def test_treasury_spend_fails_when_relocked() -> None:
    accounts = _accounts()
    chain = Chain(accounts, {**PARAMS, "economics_lock_days": 0})
    relock = chain.ok(
        "@alice",
        "GOV_PROPOSAL_CREATE",
        {
            "title": "relock",
            "body": "",
            "voting_blocks": 3,
            "action": {
                "type": "param_change",
                "key": "economics_lock_days",
                "value": 36_500,
            },
        },
    )["proposal_id"]
    # Proposed while unlocked; the relock passes before the spend closes.
    spend = _spend(chain, 100)
    _vote(chain, [relock, spend], VOTERS[:2], "yes")
    assert (
        _proposal(chain, relock)["close_height"]
        < _proposal(chain, spend)["close_height"]
    )
    chain.advance_to(_proposal(chain, spend)["close_height"])
    assert _proposal(chain, relock)["status"] == "passed"
    assert _proposal(chain, spend)["status"] == "failed"
    assert _proposal(chain, spend)["outcome"]["error"] == "economics_locked"
    assert _balance(chain, "@treasury") == 500


def test_treasury_spend_not_creatable_by_proposal() -> None:
    chain = Chain(_accounts(), {**PARAMS, "economics_lock_days": 0})
    payload = {
        "title": "spend",
        "body": "",
        "voting_blocks": 2,
        "action": {"type": "treasury_spend", "to": "@bob", "amount": 1},
    }
    chain.reject("@alice", "GOV_PROPOSAL_CREATE", payload, "invalid_payload")


def test_system_account_params_validated() -> None:
    for overrides, message in (
        ({"reward_pool_account": "rewards"}, "params.reward_pool_account"),
        ({"treasury_account": 5}, "params.treasury_account"),
        ({"treasury_account": "@rewards"}, "must differ"),
        ({"treasury_voting_blocks": 0}, "params.treasury_voting_blocks"),
    ):
        with pytest.raises(ProtocolError) as caught:
            merge_params(overrides)
        assert caught.value.code == "invalid_payload"
        assert message in caught.value.message
    params = merge_params({"treasury_account": "@commons"})
    assert params["treasury_account"] == "@commons"
    assert params["reward_pool_account"] == "@rewards"
