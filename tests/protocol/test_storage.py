"""Storage operators and pins: assignment, confirmations, shortfalls and healing."""

from __future__ import annotations

from typing import Any

import pytest
from chain_harness import CID_A, CID_B, PRODUCER_ID, Chain, account_entry

from weall.protocol.rules._assign import has_role
from weall.protocol.rules.storage import (
    UNLIMITED_CAPACITY,
    assigned_pins,
    operator_record,
    pin_id_for_cid,
    pin_status,
    pins_with_shortfall,
)

OPERATORS = [f"@operator{i}" for i in range(1, 6)]
TIMEOUT = 5


@pytest.fixture
def chain() -> Chain:
    accounts = [account_entry(op, 2, ["node_operator"]) for op in OPERATORS]
    accounts += [
        account_entry("@member", 2),
        account_entry("@user", 1),
        account_entry("@newcomer", 0),
    ]
    return Chain(accounts, {"pin_confirm_timeout_blocks": TIMEOUT})


def request_pin(
    chain: Chain, cid: str = CID_A, size: int = 1000, signer: str = "@user"
) -> dict[str, Any]:
    receipt = chain.ok(signer, "IPFS_PIN_REQUEST", {"cid": cid, "size_bytes": size})
    pin = chain.get("pin", receipt["pin_id"])
    assert pin is not None
    return pin


def confirm(chain: Chain, operator: str, pin_id: str, ok: bool = True) -> None:
    chain.ok(operator, "IPFS_PIN_CONFIRM", {"pin_id": pin_id, "ok": ok})


def status(chain: Chain, pin_id: str) -> dict[str, Any]:
    result = pin_status(chain.state, pin_id, chain.height + 1, chain.params)
    assert result is not None
    return result


def targets_of(chain: Chain, pin_id: str) -> list[str]:
    pin = chain.get("pin", pin_id)
    assert pin is not None
    return [t["operator"] for t in pin["targets"]]


def shortfall_ids(chain: Chain) -> list[str]:
    found = pins_with_shortfall(chain.state, chain.height + 1, chain.params, 10)
    return [entry["pin_id"] for entry in found]


def spare_operator(chain: Chain, pin_id: str) -> str:
    return next(op for op in OPERATORS if op not in targets_of(chain, pin_id))


def used_bytes(chain: Chain, operator: str) -> int:
    record = operator_record(chain.state, operator)
    assert record is not None
    return int(record["used_bytes"])


# -- operators --------------------------------------------------------------


def test_genesis_operator_has_unlimited_default_record(chain: Chain) -> None:
    assert chain.get("storage_operator", "@operator1") is None
    record = operator_record(chain.state, "@operator1")
    assert record == {
        "capacity_bytes": UNLIMITED_CAPACITY,
        "used_bytes": 0,
        "enrolled_height": 0,
        "withdrawn_height": None,
    }
    assert operator_record(chain.state, "@member") is None


def test_enroll_grants_role_and_record(chain: Chain) -> None:
    assert chain.ok("@member", "STORAGE_OPERATOR_ENROLL", {"capacity_bytes": 5000}) == {
        "ok": True
    }
    assert "node_operator" in chain.account("@member")["roles"]
    assert has_role(chain.state, "node_operator", "@member")
    assert chain.get("storage_operator", "@member") == {
        "capacity_bytes": 5000,
        "used_bytes": 0,
        "enrolled_height": chain.height,
        "withdrawn_height": None,
    }
    chain.reject(
        "@member", "STORAGE_OPERATOR_ENROLL", {"capacity_bytes": 5000}, "conflict"
    )


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"capacity_bytes": 0},
        {"capacity_bytes": -1},
        {"capacity_bytes": True},
        {"capacity_bytes": "10"},
        {"capacity_bytes": 10, "region": "eu"},
    ],
    ids=["missing", "zero", "negative", "bool", "text", "unknown-field"],
)
def test_enroll_rejects_payload(chain: Chain, payload: dict[str, Any]) -> None:
    chain.reject("@member", "STORAGE_OPERATOR_ENROLL", payload, "invalid_payload")


def test_enroll_needs_tier2(chain: Chain) -> None:
    chain.reject(
        "@user", "STORAGE_OPERATOR_ENROLL", {"capacity_bytes": 10}, "tier_required"
    )


def test_withdraw_removes_role(chain: Chain) -> None:
    chain.ok("@operator1", "STORAGE_OPERATOR_WITHDRAW", {})
    assert "node_operator" not in chain.account("@operator1")["roles"]
    assert not has_role(chain.state, "node_operator", "@operator1")
    record = chain.get("storage_operator", "@operator1")
    assert record is not None
    assert record["withdrawn_height"] == chain.height
    chain.reject("@operator1", "STORAGE_OPERATOR_WITHDRAW", {}, "role_required")
    chain.reject(
        "@operator2", "STORAGE_OPERATOR_WITHDRAW", {"now": True}, "invalid_payload"
    )


def test_withdrawn_operator_pins_are_shortfalls_until_reenrol(chain: Chain) -> None:
    pin = request_pin(chain)
    for operator in targets_of(chain, pin["id"]):
        confirm(chain, operator, pin["id"])
    assert status(chain, pin["id"])["durable"]
    assert chain.get("pin_unsettled", pin["id"]) is None
    leaving = targets_of(chain, pin["id"])[0]
    chain.ok(leaving, "STORAGE_OPERATOR_WITHDRAW", {})
    current = status(chain, pin["id"])
    assert current["shortfall"]
    assert not current["durable"]
    assert current["confirmations"] == 2
    assert current["targets"][0]["state"] == "withdrawn"
    assert chain.get("pin_unsettled", pin["id"]) is not None
    assert shortfall_ids(chain) == [pin["id"]]

    # Enrolling again keeps the used bytes and restores the confirmation.
    chain.ok(leaving, "STORAGE_OPERATOR_ENROLL", {"capacity_bytes": 10_000})
    assert used_bytes(chain, leaving) == 1000
    assert status(chain, pin["id"])["durable"]
    assert chain.get("pin_unsettled", pin["id"]) is None


# -- pin requests -----------------------------------------------------------


def test_pin_request_assigns_operators_and_media(chain: Chain) -> None:
    receipt = chain.ok("@user", "IPFS_PIN_REQUEST", {"cid": CID_A, "size_bytes": 1000})
    pin_id = receipt["pin_id"]
    assert pin_id == chain.blocks[-1].header["tx_ids"][0]
    pin = chain.get("pin", pin_id)
    assert pin is not None
    assert pin["owner"] == "@user"
    assert pin["replication_factor"] == 3
    assert len(pin["targets"]) == 3
    assert all(t["assigned_height"] == chain.height for t in pin["targets"])
    assert all(t["confirmation"] is None for t in pin["targets"])
    assert chain.get("media", CID_A) == {"pin_id": pin_id, "owner": "@user"}
    assert pin_id_for_cid(chain.state, CID_A) == pin_id
    assert chain.get("pin_unsettled", pin_id) is not None
    for operator in targets_of(chain, pin_id):
        assert used_bytes(chain, operator) == 1000
        (entry,) = assigned_pins(chain.state, operator)
        assert entry == {
            "pin_id": pin_id,
            "cid": CID_A,
            "size_bytes": 1000,
            "assigned_height": chain.height,
            "ok": None,
        }
    current = status(chain, pin_id)
    assert not current["shortfall"]
    assert not current["durable"]
    assert current["confirmations"] == 0


def test_pin_request_lets_posts_use_media(chain: Chain) -> None:
    chain.ok("@member", "STORAGE_OPERATOR_ENROLL", {"capacity_bytes": 10})
    post = {"body": "a picture", "media": [CID_A]}
    chain.reject("@member", "CONTENT_POST_CREATE", post, "invalid_payload")
    request_pin(chain, CID_A, signer="@member")
    chain.ok("@member", "CONTENT_POST_CREATE", post)


def test_pin_request_rejects_duplicate_cid(chain: Chain) -> None:
    pin = request_pin(chain)
    payload = {"cid": CID_A, "size_bytes": 1000}
    error = chain.reject("@member", "IPFS_PIN_REQUEST", payload, "conflict")
    assert error.details == {"pin_id": pin["id"], "cid": CID_A}


@pytest.mark.parametrize(
    "payload",
    [
        {"cid": "Qm-not-base32", "size_bytes": 1},
        {"cid": CID_A},
        {"cid": CID_A, "size_bytes": -1},
        {"cid": CID_A, "size_bytes": 1, "pin": True},
        {"cid": CID_A, "size_bytes": "1"},
    ],
    ids=["bad-cid", "missing-size", "negative-size", "unknown-field", "text-size"],
)
def test_pin_request_rejects_payload(chain: Chain, payload: dict[str, Any]) -> None:
    chain.reject("@user", "IPFS_PIN_REQUEST", payload, "invalid_payload")


def test_pin_request_gate_and_on_behalf_of(chain: Chain) -> None:
    payload = {"cid": CID_A, "size_bytes": 10}
    chain.reject("@newcomer", "IPFS_PIN_REQUEST", payload, "tier_required")
    behalf = {**payload, "on_behalf_of": "@newcomer"}
    error = chain.reject("@user", "IPFS_PIN_REQUEST", behalf, "role_required")
    assert error.details == {"required_role": "producer"}
    chain.reject(
        PRODUCER_ID,
        "IPFS_PIN_REQUEST",
        {**payload, "on_behalf_of": "@ghost"},
        "not_found",
    )
    chain.reject(
        PRODUCER_ID,
        "IPFS_PIN_REQUEST",
        {**payload, "on_behalf_of": "ghost"},
        "invalid_payload",
    )
    receipt = chain.ok(PRODUCER_ID, "IPFS_PIN_REQUEST", behalf)
    pin = chain.get("pin", receipt["pin_id"])
    assert pin is not None
    assert pin["owner"] == "@newcomer"
    assert pin["requester"] == PRODUCER_ID
    assert chain.get("media", CID_A) == {
        "pin_id": receipt["pin_id"],
        "owner": "@newcomer",
    }


def test_pin_request_producer_passes_tier_gate() -> None:
    accounts = [account_entry(op, 2, ["node_operator"]) for op in OPERATORS[:3]]
    accounts.append(account_entry("@node", 0, ["producer"]))
    chain = Chain(accounts)
    chain.ok("@node", "IPFS_PIN_REQUEST", {"cid": CID_A, "size_bytes": 10})


def test_pin_request_insufficient_operators(chain: Chain) -> None:
    for operator in OPERATORS[:3]:
        chain.ok(operator, "STORAGE_OPERATOR_WITHDRAW", {})
    error = chain.reject(
        "@user",
        "IPFS_PIN_REQUEST",
        {"cid": CID_A, "size_bytes": 1},
        "insufficient_operators",
    )
    assert error.details == {"required": 3, "eligible": 2}


def test_pin_request_skips_operators_without_capacity() -> None:
    accounts = [account_entry(op, 2) for op in OPERATORS]
    accounts.append(account_entry("@user", 1))
    chain = Chain(accounts)
    capacities = [500, 1000, 999, 2000, 5000]
    for operator, capacity in zip(OPERATORS, capacities, strict=True):
        chain.ok(operator, "STORAGE_OPERATOR_ENROLL", {"capacity_bytes": capacity})
    pin = request_pin(chain, size=1000)
    assert sorted(targets_of(chain, pin["id"])) == [
        "@operator2",
        "@operator4",
        "@operator5",
    ]
    # @operator2 is now full, so only two operators can take another 1000 bytes.
    payload = {"cid": CID_B, "size_bytes": 1000}
    error = chain.reject("@user", "IPFS_PIN_REQUEST", payload, "insufficient_operators")
    assert error.details == {"required": 3, "eligible": 2}
    request_pin(chain, CID_B, size=999)


def test_pin_request_excludes_owner_operator() -> None:
    # Three operators, replication factor 3: an operator that asks for its own
    # pin leaves only two others, so the request is short of operators.
    accounts = [account_entry(op, 2, ["node_operator"]) for op in OPERATORS[:4]]
    chain = Chain(accounts)
    receipt = chain.ok(
        "@operator1", "IPFS_PIN_REQUEST", {"cid": CID_A, "size_bytes": 10}
    )
    assert "@operator1" not in targets_of(chain, receipt["pin_id"])
    assert sorted(targets_of(chain, receipt["pin_id"])) == OPERATORS[1:4]
    chain.ok("@operator4", "STORAGE_OPERATOR_WITHDRAW", {})
    error = chain.reject(
        "@operator2",
        "IPFS_PIN_REQUEST",
        {"cid": CID_B, "size_bytes": 10},
        "insufficient_operators",
    )
    assert error.details == {"required": 3, "eligible": 2}


def test_pin_request_excludes_on_behalf_of_owner() -> None:
    accounts = [account_entry(op, 2, ["node_operator"]) for op in OPERATORS[:4]]
    chain = Chain(accounts)
    for seed, cid in enumerate((CID_A, CID_B)):
        owner = OPERATORS[seed]
        payload = {"cid": cid, "size_bytes": 10, "on_behalf_of": owner}
        receipt = chain.ok(PRODUCER_ID, "IPFS_PIN_REQUEST", payload)
        targets = targets_of(chain, receipt["pin_id"])
        assert owner not in targets
        assert sorted(targets) == sorted(set(OPERATORS[:4]) - {owner})


def test_heal_never_assigns_owner() -> None:
    accounts = [account_entry(op, 2, ["node_operator"]) for op in OPERATORS[:4]]
    chain = Chain(accounts, {"replication_factor": 2})
    payload = {"cid": CID_A, "size_bytes": 10, "on_behalf_of": "@operator4"}
    pin_id = chain.ok(PRODUCER_ID, "IPFS_PIN_REQUEST", payload)["pin_id"]
    first, second = targets_of(chain, pin_id)
    confirm(chain, first, pin_id, ok=False)
    receipt = chain.ok(PRODUCER_ID, "IPFS_PIN_HEAL", {"pin_id": pin_id})
    # The only operator left besides the targets and the owner is the replacement.
    (spare,) = set(OPERATORS[:3]) - {first, second}
    assert receipt["assigned"] == [spare]
    confirm(chain, spare, pin_id, ok=False)
    error = chain.reject(
        PRODUCER_ID, "IPFS_PIN_HEAL", {"pin_id": pin_id}, "insufficient_operators"
    )
    assert error.details == {"required": 1, "eligible": 0}


def test_pin_request_insufficient_operators_at_block_time(chain: Chain) -> None:
    for operator in OPERATORS[:2]:
        chain.ok(operator, "STORAGE_OPERATOR_WITHDRAW", {})
    # Admitted while three operators remain, but one withdraws earlier in the block.
    pin_env = chain.envelope(
        "@user", "IPFS_PIN_REQUEST", {"cid": CID_A, "size_bytes": 1}
    )
    chain.admit(pin_env)
    chain.submit("@operator3", "STORAGE_OPERATOR_WITHDRAW", {})
    chain.include(pin_env)
    withdraw, pin = chain.commit()
    assert withdraw["ok"]
    assert pin["code"] == "insufficient_operators"
    assert chain.get("media", CID_A) is None


# -- confirmations ----------------------------------------------------------


def test_confirm_until_durable(chain: Chain) -> None:
    pin = request_pin(chain)
    first, second, third = targets_of(chain, pin["id"])
    confirm(chain, first, pin["id"])
    assert status(chain, pin["id"])["confirmations"] == 1
    assert assigned_pins(chain.state, first)[0]["ok"] is True
    confirm(chain, second, pin["id"])
    assert chain.get("pin_unsettled", pin["id"]) is not None
    confirm(chain, third, pin["id"])
    current = status(chain, pin["id"])
    assert current["durable"]
    assert not current["shortfall"]
    assert current["confirmations"] == 3
    assert chain.get("pin_unsettled", pin["id"]) is None


def test_confirm_rejects(chain: Chain) -> None:
    pin = request_pin(chain)
    target = targets_of(chain, pin["id"])[0]
    outsider = spare_operator(chain, pin["id"])
    payload = {"pin_id": pin["id"], "ok": True}
    chain.reject(outsider, "IPFS_PIN_CONFIRM", payload, "not_assigned")
    chain.reject("@member", "IPFS_PIN_CONFIRM", payload, "role_required")
    chain.reject(
        target, "IPFS_PIN_CONFIRM", {"pin_id": pin["id"], "ok": 1}, "invalid_payload"
    )
    chain.reject(target, "IPFS_PIN_CONFIRM", {"pin_id": pin["id"]}, "invalid_payload")
    chain.reject(
        target, "IPFS_PIN_CONFIRM", {**payload, "pin_id": "b" + "a" * 52}, "not_found"
    )
    confirm(chain, target, pin["id"])
    chain.reject(target, "IPFS_PIN_CONFIRM", payload, "conflict")


def test_confirm_can_change_report(chain: Chain) -> None:
    pin = request_pin(chain)
    target = targets_of(chain, pin["id"])[0]
    confirm(chain, target, pin["id"], ok=True)
    confirm(chain, target, pin["id"], ok=False)
    assert status(chain, pin["id"])["targets"][0]["state"] == "failed"
    assert status(chain, pin["id"])["shortfall"]
    confirm(chain, target, pin["id"], ok=True)
    assert status(chain, pin["id"])["targets"][0]["state"] == "ok"
    assert not status(chain, pin["id"])["shortfall"]


def test_timeout_makes_overdue_shortfall(chain: Chain) -> None:
    pin = request_pin(chain)
    first, _, _ = targets_of(chain, pin["id"])
    confirm(chain, first, pin["id"])
    assigned = pin["height"]
    # At the last height before the timeout nothing is overdue.
    early = pin_status(chain.state, pin["id"], assigned + TIMEOUT - 1, chain.params)
    assert early is not None
    assert not early["shortfall"]
    late = pin_status(chain.state, pin["id"], assigned + TIMEOUT, chain.params)
    assert late is not None
    assert late["shortfall"]
    assert [t["state"] for t in late["targets"]] == ["ok", "overdue", "overdue"]


# -- healing ----------------------------------------------------------------


def test_heal_rejects_without_shortfall(chain: Chain) -> None:
    pin = request_pin(chain)
    error = chain.reject(
        PRODUCER_ID, "IPFS_PIN_HEAL", {"pin_id": pin["id"]}, "conflict"
    )
    assert error.details == {"pin_id": pin["id"]}
    chain.reject("@operator1", "IPFS_PIN_HEAL", {"pin_id": pin["id"]}, "role_required")
    chain.reject(PRODUCER_ID, "IPFS_PIN_HEAL", {"pin_id": "b" + "a" * 52}, "not_found")
    chain.reject(PRODUCER_ID, "IPFS_PIN_HEAL", {}, "invalid_payload")


def test_heal_replaces_failed_target(chain: Chain) -> None:
    pin = request_pin(chain)
    first, second, third = targets_of(chain, pin["id"])
    confirm(chain, first, pin["id"])
    confirm(chain, second, pin["id"], ok=False)
    assert shortfall_ids(chain) == [pin["id"]]

    receipt = chain.ok(PRODUCER_ID, "IPFS_PIN_HEAL", {"pin_id": pin["id"]})
    (replacement,) = receipt["assigned"]
    assert replacement not in (first, second, third)
    assert targets_of(chain, pin["id"]) == [first, replacement, third]
    healed = chain.get("pin", pin["id"])
    assert healed is not None
    assert healed["heal_count"] == 1
    assert healed["released"][0]["operator"] == second
    assert healed["released"][0]["reason"] == "failed"
    assert healed["targets"][1] == {
        "operator": replacement,
        "assigned_height": chain.height,
        "confirmation": None,
    }

    assert used_bytes(chain, second) == 0
    assert used_bytes(chain, replacement) == 1000
    assert assigned_pins(chain.state, second) == []
    assert [p["pin_id"] for p in assigned_pins(chain.state, replacement)] == [pin["id"]]
    assert not status(chain, pin["id"])["shortfall"]

    payload = {"pin_id": pin["id"], "ok": True}
    chain.reject(second, "IPFS_PIN_CONFIRM", payload, "not_assigned")
    confirm(chain, replacement, pin["id"])
    confirm(chain, third, pin["id"])
    assert status(chain, pin["id"])["durable"]


def test_heal_replaces_overdue_and_withdrawn_targets(chain: Chain) -> None:
    pin = request_pin(chain)
    first, second, third = targets_of(chain, pin["id"])
    confirm(chain, first, pin["id"])
    chain.ok(second, "STORAGE_OPERATOR_WITHDRAW", {})
    chain.advance_to(pin["height"] + TIMEOUT - 1)
    assert [t["state"] for t in status(chain, pin["id"])["targets"]] == [
        "ok",
        "withdrawn",
        "overdue",
    ]
    receipt = chain.ok(PRODUCER_ID, "IPFS_PIN_HEAL", {"pin_id": pin["id"]})
    assert len(receipt["assigned"]) == 2
    assert targets_of(chain, pin["id"])[0] == first
    assert set(targets_of(chain, pin["id"])[1:]) == set(receipt["assigned"])
    assert {second, third}.isdisjoint(receipt["assigned"])


def test_heal_partial_and_insufficient_operators() -> None:
    accounts = [account_entry(op, 2, ["node_operator"]) for op in OPERATORS[:4]]
    accounts.append(account_entry("@user", 1))
    chain = Chain(accounts, {"pin_confirm_timeout_blocks": TIMEOUT})
    pin = request_pin(chain)
    first, second, third = targets_of(chain, pin["id"])
    confirm(chain, second, pin["id"], ok=False)
    confirm(chain, third, pin["id"], ok=False)
    receipt = chain.ok(PRODUCER_ID, "IPFS_PIN_HEAL", {"pin_id": pin["id"]})
    (spare,) = receipt["assigned"]
    assert targets_of(chain, pin["id"]) == [first, spare, third]
    assert status(chain, pin["id"])["shortfall"]
    error = chain.reject(
        PRODUCER_ID, "IPFS_PIN_HEAL", {"pin_id": pin["id"]}, "insufficient_operators"
    )
    assert error.details == {"required": 1, "eligible": 0}


def test_pins_with_shortfall_pages(chain: Chain) -> None:
    cids = [CID_A, CID_B, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"]
    pins = [request_pin(chain, cid) for cid in cids]
    for pin in pins:
        confirm(chain, targets_of(chain, pin["id"])[0], pin["id"], ok=False)
    expected = sorted(p["id"] for p in pins)
    height, params = chain.height + 1, chain.params
    assert [
        s["pin_id"] for s in pins_with_shortfall(chain.state, height, params, 10)
    ] == expected
    first_page = pins_with_shortfall(chain.state, height, params, 2)
    assert [s["pin_id"] for s in first_page] == expected[:2]
    rest = pins_with_shortfall(
        chain.state, height, params, 2, after=first_page[-1]["pin_id"]
    )
    assert [s["pin_id"] for s in rest] == expected[2:]
    assert pin_status(chain.state, "b" + "a" * 52, height, params) is None
