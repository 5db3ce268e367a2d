"""Every transaction type against every tier and role: the gate table of the protocol.

``SPEC_GATES`` restates the gate column of the protocol's type table by hand,
so a type added to ``TX_TYPES`` without a row here, or a row that drifts from
the table, fails. Each scenario admits every type from every signer and also
runs it through a block built over the same committed state, and the two
outcomes must agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from chain_harness import (
    BLOCK_MS,
    GENESIS_TIME_MS,
    Chain,
    account_entry,
    genesis_document,
)

from weall.errors import ProtocolError, TxRejected
from weall.protocol.block import build_block
from weall.protocol.envelope import Envelope
from weall.protocol.genesis import validate_genesis
from weall.protocol.params import DAY_MS, merge_params
from weall.protocol.txtypes import TX_TYPES


@dataclass(frozen=True)
class Gate:
    """One row of the protocol's gate column."""

    tier: int | None
    role: str | None = None
    producer_alternative: bool = False
    economic: bool = False


SPEC_GATES: dict[str, Gate] = {
    "ACCOUNT_REGISTER": Gate(None),
    "ACCOUNT_KEY_ADD": Gate(0),
    "ACCOUNT_KEY_REVOKE": Gate(0),
    "ACCOUNT_SESSION_KEY_ISSUE": Gate(0),
    "ACCOUNT_SESSION_KEY_REVOKE": Gate(0),
    "PROFILE_UPDATE": Gate(0),
    "POH_ASYNC_REQUEST_OPEN": Gate(0),
    "POH_REVIEW_SUBMIT": Gate(0, "juror"),
    "POH_LIVE_REQUEST_OPEN": Gate(1),
    "POH_LIVE_VERDICT_SUBMIT": Gate(0, "juror"),
    "ROLE_JUROR_ENROLL": Gate(2),
    "FOLLOW_SET": Gate(1),
    "CONTENT_POST_CREATE": Gate(2),
    "CONTENT_POST_EDIT": Gate(2),
    "CONTENT_POST_DELETE": Gate(2),
    "CONTENT_COMMENT_CREATE": Gate(2),
    "CONTENT_COMMENT_DELETE": Gate(2),
    "CONTENT_REACTION_SET": Gate(2),
    "CONTENT_FLAG": Gate(2),
    "GROUP_CREATE": Gate(2),
    "GROUP_MEMBERSHIP_REQUEST": Gate(1),
    # The group admin check depends on the payload, so the handler makes it.
    "GROUP_MEMBERSHIP_DECIDE": Gate(0),
    "GOV_PROPOSAL_CREATE": Gate(2),
    "GOV_VOTE_CAST": Gate(2),
    "DISPUTE_OPEN": Gate(2),
    "DISPUTE_VOTE_SUBMIT": Gate(0, "juror"),
    "STORAGE_OPERATOR_ENROLL": Gate(2),
    "STORAGE_OPERATOR_WITHDRAW": Gate(0, "node_operator"),
    "IPFS_PIN_REQUEST": Gate(1, producer_alternative=True),
    "IPFS_PIN_CONFIRM": Gate(0, "node_operator"),
    "IPFS_PIN_HEAL": Gate(None, "producer"),
    "BALANCE_TRANSFER": Gate(1, economic=True),
    "TREASURY_SPEND_PROPOSE": Gate(2, economic=True),
    "REWARD_CLAIM": Gate(1, economic=True),
}

GATE_CODES = frozenset({"tier_required", "role_required", "economics_locked"})
ROLE_VARIANTS = (None, "juror", "node_operator")
PRODUCER = "@the_producer"


@dataclass(frozen=True)
class Scenario:
    name: str
    producer_tier: int
    locked: bool
    gates: dict[str, int]


SCENARIOS = [
    Scenario("producer-t0-locked", 0, True, {}),
    Scenario("producer-t2-unlocked", 2, False, {}),
    Scenario(
        "overrides-locked",
        0,
        True,
        {
            "FOLLOW_SET": 2,
            "CONTENT_POST_CREATE": 0,
            "POH_REVIEW_SUBMIT": 1,
            "IPFS_PIN_HEAL": 2,
            "IPFS_PIN_REQUEST": 2,
            "BALANCE_TRANSFER": 0,
        },
    ),
    Scenario(
        "overrides-unlocked",
        2,
        False,
        {
            "ACCOUNT_KEY_ADD": 1,
            "GROUP_MEMBERSHIP_REQUEST": 0,
            "DISPUTE_VOTE_SUBMIT": 2,
            "STORAGE_OPERATOR_WITHDRAW": 1,
            "REWARD_CLAIM": 2,
            "IPFS_PIN_HEAL": 1,
        },
    ),
]


def signer_id(tier: int, role: str | None) -> str:
    return f"@tier{tier}_{role or 'plain'}"


def build_chain(scenario: Scenario) -> Chain:
    accounts = [
        account_entry(signer_id(tier, role), tier, [role] if role else [])
        for tier in (0, 1, 2)
        for role in ROLE_VARIANTS
    ]
    accounts.append(account_entry(PRODUCER, scenario.producer_tier, ["producer"]))
    # A funded reward pool, so that a claim that passes its gates succeeds.
    accounts.append(account_entry("@rewards", 0, balance=1000))
    params: dict[str, Any] = {"gates": scenario.gates}
    if not scenario.locked:
        params["economics_lock_days"] = 0
    return Chain(accounts, params)


def expected_gate_code(
    scenario: Scenario, tx_type: str, tier: int, roles: list[str]
) -> str | None:
    gate = SPEC_GATES[tx_type]
    required = scenario.gates.get(tx_type, gate.tier)
    producer_passes = gate.producer_alternative and "producer" in roles
    if required is not None and tier < required and not producer_passes:
        return "tier_required"
    if gate.role is not None and gate.role not in roles:
        return "role_required"
    if gate.economic and scenario.locked:
        return "economics_locked"
    return None


def admission_code(chain: Chain, env: Envelope) -> str | None:
    try:
        chain.admit(env)
    except TxRejected as exc:
        return exc.code
    return None


def block_code(chain: Chain, env: Envelope) -> str | None:
    """Apply ``env`` in a block over the committed state, then discard the block."""
    result = build_block(
        chain.state,
        chain.head,
        [env],
        timestamp_ms=chain.next_timestamp_ms,
        genesis=chain.info,
        producer_pubkey=chain.producer_key.pubkey,
        sign=None,
    )
    (receipt,) = result.receipts
    return None if receipt["ok"] else str(receipt["code"])


def signers(chain: Chain) -> list[tuple[str, int, list[str]]]:
    table = [
        (signer_id(tier, role), tier, [role] if role else [])
        for tier in (0, 1, 2)
        for role in ROLE_VARIANTS
    ]
    producer = chain.account(PRODUCER)
    table.append((PRODUCER, producer["poh_tier"], producer["roles"]))
    return table


def test_spec_table_covers_every_type() -> None:
    assert set(SPEC_GATES) == set(TX_TYPES)
    for name, row in TX_TYPES.items():
        gate = SPEC_GATES[name]
        assert (row.tier, row.role, row.producer_alternative, row.economic) == (
            gate.tier,
            gate.role,
            gate.producer_alternative,
            gate.economic,
        ), name
        assert row.handler is not None, f"{name} has no handler"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_type_is_gated(scenario: Scenario) -> None:
    chain = build_chain(scenario)
    mismatches = []
    for tx_type in TX_TYPES:
        if tx_type == "ACCOUNT_REGISTER":
            continue
        for signer, tier, roles in signers(chain):
            expected = expected_gate_code(scenario, tx_type, tier, roles)
            env = chain.envelope(signer, tx_type, {})
            admitted = admission_code(chain, env)
            in_block = block_code(chain, env)
            if expected is not None and admitted != expected:
                mismatches.append((tx_type, signer, "admission", expected, admitted))
            if expected is None and admitted in GATE_CODES:
                mismatches.append(
                    (tx_type, signer, "admission", "gate passed", admitted)
                )
            if in_block != admitted:
                mismatches.append((tx_type, signer, "block", admitted, in_block))
    assert mismatches == []


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_register_has_no_gate(scenario: Scenario) -> None:
    chain = build_chain(scenario)
    env = chain.envelope("@newcomer", "ACCOUNT_REGISTER", {})
    assert admission_code(chain, env) is None
    assert block_code(chain, env) is None
    taken = chain.envelope(signer_id(0, None), "ACCOUNT_REGISTER", {})
    assert admission_code(chain, taken) == "account_exists"


def test_unlocked_economic_types_pass_the_lock() -> None:
    # From the unlock time on, economic types pass the lock; the tier gate still applies.
    chain = build_chain(SCENARIOS[0])
    claim = chain.envelope(signer_id(2, None), "REWARD_CLAIM", {})
    chain.next_timestamp_ms = GENESIS_TIME_MS + 90 * DAY_MS - BLOCK_MS
    assert admission_code(chain, claim) == "economics_locked"
    assert block_code(chain, claim) == "economics_locked"
    chain.next_timestamp_ms += BLOCK_MS
    assert admission_code(chain, claim) is None
    assert block_code(chain, claim) is None
    low_tier = chain.envelope(signer_id(0, None), "REWARD_CLAIM", {})
    assert admission_code(chain, low_tier) == "tier_required"


@pytest.mark.parametrize(
    ("gates", "message"),
    [
        pytest.param(
            {"ACCOUNT_REGISTER": 1},
            "params.gates.ACCOUNT_REGISTER: registration has no gate",
            id="register",
        ),
        pytest.param(
            {"ACCOUNT_REGISTER": 0},
            "params.gates.ACCOUNT_REGISTER: registration has no gate",
            id="register-tier-0",
        ),
        pytest.param(
            {"CONTENT_TELEPORT": 1},
            "params.gates: unknown tx type 'CONTENT_TELEPORT'",
            id="unknown-type",
        ),
        pytest.param(
            {"content_post_create": 1},
            "params.gates: unknown tx type 'content_post_create'",
            id="lower-case-type",
        ),
        pytest.param(
            {"FOLLOW_SET": 3},
            "params.gates.FOLLOW_SET: tier 0, 1 or 2",
            id="tier-3",
        ),
        pytest.param(
            {"FOLLOW_SET": True},
            "params.gates.FOLLOW_SET: tier 0, 1 or 2",
            id="bool-tier",
        ),
    ],
)
def test_gate_overrides_rejected(gates: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        merge_params({"gates": gates})
    assert caught.value.code == "invalid_payload"
    assert caught.value.message.startswith(message), caught.value.message
    document = genesis_document([account_entry("@someone")], {"gates": gates})
    with pytest.raises(ProtocolError) as caught:
        validate_genesis(document)
    assert caught.value.code == "invalid_payload"


def test_gate_override_accepted_for_other_types() -> None:
    gates = {name: 0 for name in TX_TYPES if name != "ACCOUNT_REGISTER"}
    assert merge_params({"gates": gates})["gates"] == gates
