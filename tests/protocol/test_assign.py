"""Deterministic assignment: start index known answers, wrapping, eligibility."""

from __future__ import annotations

import hashlib

import pytest
from chain_harness import CID_A, Chain, account_entry

from weall.errors import ProtocolError, TxRejected
from weall.protocol.encoding import encode_hash, hash_bytes
from weall.protocol.rules._assign import (
    assign,
    pick_accounts,
    role_holders,
    start_index,
)

REQUEST_1 = hash_bytes(b"request-1")
REQUEST_2 = hash_bytes(b"request-2")
ZERO_ID = encode_hash(bytes(32))
CANDIDATES = [f"@juror{i}" for i in range(1, 8)]


def reference_start(request_id: str, count: int) -> int:
    """Compute the start index from the definition, with the standard library only.

    The seed is SHA-256 over the ASCII text of the request id.
    """
    seed = hashlib.sha256(request_id.encode("ascii")).digest()
    return int.from_bytes(seed[:8], "big") % count


def test_request_ids_are_the_expected_hashes() -> None:
    assert REQUEST_1 == "bdhyqms3btve5gu4s5ldsmhgxezwhebtr7rmu6szcn4zl6c7oos5a"
    assert REQUEST_2 == "bn7ddkzjeoitfspcjunxj3jei43q4gou2d7gyu5xvkvzuqmjwxcaa"
    assert ZERO_ID == "b" + "a" * 52


@pytest.mark.parametrize(
    ("request_id", "count", "expected"),
    [
        (REQUEST_1, 1, 0),
        (REQUEST_1, 2, 0),
        (REQUEST_1, 3, 1),
        (REQUEST_1, 5, 3),
        (REQUEST_1, 7, 6),
        (REQUEST_1, 10, 8),
        (REQUEST_2, 5, 1),
        (REQUEST_2, 7, 2),
        (REQUEST_2, 10, 6),
        (ZERO_ID, 7, 6),
    ],
    ids=[
        "r1-of-1",
        "r1-of-2",
        "r1-of-3",
        "r1-of-5",
        "r1-of-7",
        "r1-of-10",
        "r2-of-5",
        "r2-of-7",
        "r2-of-10",
        "zero-of-7",
    ],
)
def test_start_index_known_answers(request_id: str, count: int, expected: int) -> None:
    assert start_index(request_id, count) == expected
    assert reference_start(request_id, count) == expected


def test_start_index_seeds_with_id_text() -> None:
    # SHA-256 of the 53 ASCII characters "baaa...a" starts with 6da911c35e0872d4,
    # and that % 7 == 6.
    assert (
        hashlib.sha256(ZERO_ID.encode("ascii"))
        .hexdigest()
        .startswith("6da911c35e0872d4")
    )
    assert 0x6DA911C35E0872D4 % 7 == 6
    assert start_index(ZERO_ID, 7) == 6
    # Hashing the 32 digest bytes that the text encodes would give another index.
    raw_seed = hashlib.sha256(bytes(32)).digest()
    assert int.from_bytes(raw_seed[:8], "big") % 7 == 2


def test_start_index_rejects_malformed_id() -> None:
    with pytest.raises(ProtocolError) as caught:
        start_index("B" + "A" * 52, 7)
    assert caught.value.code == "invalid_payload"


def test_pick_accounts_known_answers() -> None:
    # Starts at index 6 of 7 and wraps around to the first.
    assert pick_accounts(CANDIDATES, REQUEST_1, 3) == ["@juror7", "@juror1", "@juror2"]
    assert pick_accounts(CANDIDATES, REQUEST_2, 3) == ["@juror3", "@juror4", "@juror5"]
    assert pick_accounts(CANDIDATES, REQUEST_2, 7) == [
        "@juror3",
        "@juror4",
        "@juror5",
        "@juror6",
        "@juror7",
        "@juror1",
        "@juror2",
    ]
    assert pick_accounts(CANDIDATES, REQUEST_2, 0) == []


def test_pick_accounts_rejects_too_many() -> None:
    with pytest.raises(ValueError, match="cannot pick 8 of 7"):
        pick_accounts(CANDIDATES, REQUEST_1, 8)


def test_role_holders_are_ordered_by_id() -> None:
    names = ["@zeta", "@alpha", "@mid_1", "@mid"]
    chain = Chain([account_entry(n, 2, ["juror"]) for n in names])
    assert role_holders(chain.state, "juror") == ["@alpha", "@mid", "@mid_1", "@zeta"]
    assert role_holders(chain.state, "node_operator") == []


def test_assign_excludes_and_reports_shortage() -> None:
    chain = Chain([account_entry(c, 2, ["juror"]) for c in CANDIDATES])
    picked = assign(
        chain.state,
        role="juror",
        request_id=REQUEST_2,
        count=3,
        exclude={"@juror6"},
        code="insufficient_jurors",
    )
    # Six accounts are eligible, so the start index is taken modulo 6.
    eligible = [c for c in CANDIDATES if c != "@juror6"]
    start = reference_start(REQUEST_2, 6)
    assert picked == [eligible[(start + i) % 6] for i in range(3)]
    with pytest.raises(TxRejected) as caught:
        assign(
            chain.state,
            role="juror",
            request_id=REQUEST_2,
            count=7,
            exclude={"@juror6"},
            code="insufficient_jurors",
        )
    assert caught.value.code == "insufficient_jurors"
    assert caught.value.details == {"required": 7, "eligible": 6}


def test_request_assignment_matches_definition() -> None:
    jurors = CANDIDATES[:5]
    accounts = [account_entry(j, 2, ["juror"]) for j in jurors]
    accounts.append(account_entry("@applicant", 0))
    chain = Chain(accounts)
    receipt = chain.ok("@applicant", "POH_ASYNC_REQUEST_OPEN", {"evidence_cid": CID_A})
    request_id = receipt["request_id"]
    request = chain.get("poh_request", request_id)
    assert request is not None
    start = reference_start(request_id, 5)
    assert request["jurors"] == [jurors[(start + i) % 5] for i in range(3)]


def test_assignment_is_identical_on_two_chains() -> None:
    def jurors_on_new_chain() -> list[str]:
        accounts = [account_entry(j, 2, ["juror"]) for j in CANDIDATES]
        accounts.append(account_entry("@applicant", 0))
        chain = Chain(accounts)
        receipt = chain.ok(
            "@applicant", "POH_ASYNC_REQUEST_OPEN", {"evidence_cid": CID_A}
        )
        request = chain.get("poh_request", receipt["request_id"])
        assert request is not None
        return list(request["jurors"])

    assert jurors_on_new_chain() == jurors_on_new_chain()
