"""Proof-of-personhood requests, reviews, live verdicts, expiry and juror enrolment."""

from __future__ import annotations

from typing import Any

import pytest
from chain_harness import CID_A, Chain, account_entry

from weall.protocol.rules._assign import has_role, juror_tasks
from weall.protocol.rules.poh import open_request_id

JURORS = [f"@juror{i}" for i in range(1, 7)]


@pytest.fixture
def chain() -> Chain:
    accounts = [account_entry(j, 2, ["juror"]) for j in JURORS]
    accounts += [
        account_entry("@member", 2),
        account_entry("@tier1", 1),
        account_entry("@tier0", 0),
    ]
    return Chain(accounts)


def open_async(chain: Chain, signer: str = "@tier0") -> dict[str, Any]:
    receipt = chain.ok(signer, "POH_ASYNC_REQUEST_OPEN", {"evidence_cid": CID_A})
    request = chain.get("poh_request", receipt["request_id"])
    assert request is not None
    return request


def open_live(chain: Chain, signer: str = "@tier1") -> dict[str, Any]:
    receipt = chain.ok(signer, "POH_LIVE_REQUEST_OPEN", {})
    request = chain.get("poh_request", receipt["request_id"])
    assert request is not None
    return request


def review(chain: Chain, juror: str, request_id: str, verdict: str) -> dict[str, Any]:
    return chain.ok(
        juror, "POH_REVIEW_SUBMIT", {"request_id": request_id, "verdict": verdict}
    )


def live_verdict(
    chain: Chain, juror: str, request_id: str, verdict: str, attended: bool = True
) -> dict[str, Any]:
    payload = {"request_id": request_id, "attended": attended, "verdict": verdict}
    return chain.ok(juror, "POH_LIVE_VERDICT_SUBMIT", payload)


def unassigned_juror(request: dict[str, Any]) -> str:
    return next(
        j for j in JURORS if j not in request["jurors"] and j != request["applicant"]
    )


def test_tier0_reaches_tier2_through_enrolled_jurors() -> None:
    # Three genesis jurors and three tier 2 accounts that enrol, so both the
    # genesis role entries and enrolled ones are assigned. The thresholds are
    # the defaults: 2 approvals of 3 jurors, then 3 of 5.
    genesis_jurors = ["@gen_a", "@gen_b", "@gen_c"]
    enrolling = ["@enrol_a", "@enrol_b", "@enrol_c"]
    accounts = [account_entry(a, 2, ["juror"]) for a in genesis_jurors]
    accounts += [account_entry(a, 2) for a in enrolling]
    chain = Chain(accounts)
    assert chain.params["poh_async_jurors"] == 3
    assert chain.params["poh_live_threshold"] == 3
    for account in enrolling:
        chain.ok(account, "ROLE_JUROR_ENROLL", {})
        assert "juror" in chain.account(account)["roles"]
        assert has_role(chain.state, "juror", account)
    chain.register("@newbie")
    assert chain.account("@newbie")["poh_tier"] == 0

    request = open_async(chain, "@newbie")
    assert len(request["jurors"]) == 3
    assert "@newbie" not in request["jurors"]
    first, second, _ = request["jurors"]
    assert review(chain, first, request["id"], "approve")["status"] == "open"
    assert chain.account("@newbie")["poh_tier"] == 0
    assert review(chain, second, request["id"], "approve")["status"] == "approved"
    assert chain.account("@newbie")["poh_tier"] == 1
    assert open_request_id(chain.state, "@newbie") is None

    live = open_live(chain, "@newbie")
    assert len(live["jurors"]) == 5
    assert set(live["jurors"]) <= set(genesis_jurors + enrolling)
    j1, j2, j3, j4, _ = live["jurors"]
    live_verdict(chain, j1, live["id"], "approve")
    live_verdict(chain, j2, live["id"], "reject", attended=False)
    live_verdict(chain, j3, live["id"], "approve")
    assert chain.account("@newbie")["poh_tier"] == 1
    assert live_verdict(chain, j4, live["id"], "approve")["status"] == "approved"
    assert chain.account("@newbie")["poh_tier"] == 2

    chain.ok("@newbie", "ROLE_JUROR_ENROLL", {})
    assert chain.account("@newbie")["roles"] == ["juror"]
    assert chain.get("role", "juror/@newbie") == {"since_height": chain.height}


def test_async_open_records_request(chain: Chain) -> None:
    receipt = chain.ok("@tier0", "POH_ASYNC_REQUEST_OPEN", {"evidence_cid": CID_A})
    request_id = receipt["request_id"]
    assert request_id == chain.blocks[-1].header["tx_ids"][0]
    request = chain.get("poh_request", request_id)
    assert request is not None
    assert request["type"] == "async"
    assert request["applicant"] == "@tier0"
    assert request["evidence_cid"] == CID_A
    assert request["threshold"] == 2
    assert request["status"] == "open"
    assert (
        request["expires_at_height"]
        == chain.height + chain.params["poh_request_expiry_blocks"]
    )
    assert open_request_id(chain.state, "@tier0") == request_id
    for juror in request["jurors"]:
        (task,) = juror_tasks(chain.state, juror)
        assert task["id"] == request_id
        assert task["type"] == "poh_async"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({}, "invalid_payload"),
        ({"evidence_cid": "not-a-cid"}, "invalid_payload"),
        ({"evidence_cid": CID_A, "note": "x"}, "invalid_payload"),
    ],
    ids=["missing", "bad-cid", "unknown-field"],
)
def test_async_open_rejects_payload(
    chain: Chain, payload: dict[str, Any], code: str
) -> None:
    chain.reject("@tier0", "POH_ASYNC_REQUEST_OPEN", payload, code)


def test_async_open_rejects_tier1(chain: Chain) -> None:
    error = chain.reject(
        "@tier1", "POH_ASYNC_REQUEST_OPEN", {"evidence_cid": CID_A}, "conflict"
    )
    assert error.details == {"tier": 1}


def test_async_open_rejects_second_open_request(chain: Chain) -> None:
    request = open_async(chain)
    error = chain.reject(
        "@tier0", "POH_ASYNC_REQUEST_OPEN", {"evidence_cid": CID_A}, "conflict"
    )
    assert error.details == {"request_id": request["id"]}


def test_async_open_insufficient_jurors() -> None:
    # Three jurors, but one is the applicant, so only two are eligible.
    accounts = [account_entry(j, 0, ["juror"]) for j in ("@juror1", "@juror2")]
    accounts.append(account_entry("@juror3", 0, ["juror"]))
    chain = Chain(accounts)
    error = chain.reject(
        "@juror3",
        "POH_ASYNC_REQUEST_OPEN",
        {"evidence_cid": CID_A},
        "insufficient_jurors",
    )
    assert error.details == {"required": 3, "eligible": 2}


def test_review_rejects_unassigned_and_repeats(chain: Chain) -> None:
    request = open_async(chain)
    outsider = unassigned_juror(request)
    payload = {"request_id": request["id"], "verdict": "approve"}
    chain.reject(outsider, "POH_REVIEW_SUBMIT", payload, "not_assigned")
    chain.reject("@member", "POH_REVIEW_SUBMIT", payload, "role_required")
    juror = request["jurors"][0]
    review(chain, juror, request["id"], "reject")
    chain.reject(juror, "POH_REVIEW_SUBMIT", payload, "conflict")
    chain.reject(
        juror, "POH_REVIEW_SUBMIT", {**payload, "verdict": "reject"}, "conflict"
    )
    stored = chain.get("poh_request", request["id"])
    assert stored is not None
    assert stored["verdicts"] == {
        juror: {"verdict": "reject", "height": chain.height - 2}
    }


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"request_id": "bxyz", "verdict": "approve"}, "invalid_payload"),
        ({"request_id": "b" + "a" * 52, "verdict": "approve"}, "not_found"),
        ({"verdict": "approve"}, "invalid_payload"),
        ({"request_id": "b" + "a" * 52, "verdict": "maybe"}, "invalid_payload"),
        (
            {"request_id": "b" + "a" * 52, "verdict": "approve", "x": 1},
            "invalid_payload",
        ),
    ],
    ids=["bad-id", "unknown-request", "missing-id", "bad-verdict", "unknown-field"],
)
def test_review_rejects_payload(
    chain: Chain, payload: dict[str, Any], code: str
) -> None:
    chain.reject("@juror1", "POH_REVIEW_SUBMIT", payload, code)


def test_review_rejects_live_request(chain: Chain) -> None:
    live = open_live(chain)
    payload = {"request_id": live["id"], "verdict": "approve"}
    chain.reject(live["jurors"][0], "POH_REVIEW_SUBMIT", payload, "invalid_payload")


def test_async_rejected_when_threshold_unreachable(chain: Chain) -> None:
    request = open_async(chain)
    first, second, third = request["jurors"]
    assert review(chain, first, request["id"], "reject")["status"] == "open"
    assert review(chain, second, request["id"], "reject")["status"] == "rejected"
    assert chain.account("@tier0")["poh_tier"] == 0
    assert open_request_id(chain.state, "@tier0") is None
    assert juror_tasks(chain.state, third) == []
    payload = {"request_id": request["id"], "verdict": "approve"}
    error = chain.reject(third, "POH_REVIEW_SUBMIT", payload, "conflict")
    assert error.details["status"] == "rejected"
    # A rejected applicant may try again with new evidence.
    assert open_async(chain)["status"] == "open"


def test_live_open_rejects(chain: Chain) -> None:
    chain.reject("@tier0", "POH_LIVE_REQUEST_OPEN", {}, "tier_required")
    chain.reject("@member", "POH_LIVE_REQUEST_OPEN", {}, "conflict")
    chain.reject("@tier1", "POH_LIVE_REQUEST_OPEN", {"x": 1}, "invalid_payload")
    request = open_live(chain)
    error = chain.reject("@tier1", "POH_LIVE_REQUEST_OPEN", {}, "conflict")
    assert error.details == {"request_id": request["id"]}


def test_live_open_below_tier1_with_lowered_gate() -> None:
    accounts = [account_entry(j, 2, ["juror"]) for j in JURORS]
    accounts.append(account_entry("@tier0", 0))
    chain = Chain(accounts, {"gates": {"POH_LIVE_REQUEST_OPEN": 0}})
    error = chain.reject("@tier0", "POH_LIVE_REQUEST_OPEN", {}, "tier_required")
    assert error.details == {"required_tier": 1, "tier": 0}


def test_live_open_insufficient_jurors() -> None:
    accounts = [account_entry(j, 2, ["juror"]) for j in JURORS[:4]]
    accounts.append(account_entry("@tier1", 1))
    chain = Chain(accounts)
    error = chain.reject("@tier1", "POH_LIVE_REQUEST_OPEN", {}, "insufficient_jurors")
    assert error.details == {"required": 5, "eligible": 4}


def test_live_verdict_rejects(chain: Chain) -> None:
    live = open_live(chain)
    juror = live["jurors"][0]
    base = {"request_id": live["id"], "attended": True, "verdict": "approve"}
    chain.reject(
        juror, "POH_LIVE_VERDICT_SUBMIT", {**base, "attended": "yes"}, "invalid_payload"
    )
    chain.reject(
        juror, "POH_LIVE_VERDICT_SUBMIT", {**base, "attended": False}, "invalid_payload"
    )
    chain.reject(
        juror, "POH_LIVE_VERDICT_SUBMIT", {"request_id": live["id"]}, "invalid_payload"
    )
    chain.reject(
        unassigned_juror(live), "POH_LIVE_VERDICT_SUBMIT", base, "not_assigned"
    )
    chain.reject("@member", "POH_LIVE_VERDICT_SUBMIT", base, "role_required")
    live_verdict(chain, juror, live["id"], "approve")
    chain.reject(juror, "POH_LIVE_VERDICT_SUBMIT", base, "conflict")


def test_live_verdict_rejects_async_request(chain: Chain) -> None:
    request = open_async(chain)
    payload = {"request_id": request["id"], "attended": True, "verdict": "approve"}
    chain.reject(
        request["jurors"][0], "POH_LIVE_VERDICT_SUBMIT", payload, "invalid_payload"
    )


def test_live_rejected_when_too_few_attend(chain: Chain) -> None:
    live = open_live(chain)
    j1, j2, j3, j4, j5 = live["jurors"]
    live_verdict(chain, j1, live["id"], "reject", attended=False)
    live_verdict(chain, j2, live["id"], "reject", attended=False)
    assert live_verdict(chain, j3, live["id"], "reject")["status"] == "rejected"
    assert chain.account("@tier1")["poh_tier"] == 1
    for juror in (j4, j5):
        assert juror_tasks(chain.state, juror) == []


def test_requests_expire_at_expiry_height() -> None:
    accounts = [account_entry(j, 2, ["juror"]) for j in JURORS]
    accounts.append(account_entry("@tier0", 0))
    chain = Chain(accounts, {"poh_request_expiry_blocks": 3})
    request = open_async(chain)
    review(chain, request["jurors"][0], request["id"], "approve")
    chain.advance_to(request["expires_at_height"] - 1)
    stored = chain.get("poh_request", request["id"])
    assert stored is not None
    assert stored["status"] == "open"
    chain.commit()
    stored = chain.get("poh_request", request["id"])
    assert stored is not None
    assert stored["status"] == "expired"
    assert stored["closed_height"] == request["expires_at_height"]
    assert open_request_id(chain.state, "@tier0") is None
    assert chain.state.scan("poh_expiry") == []
    assert chain.state.scan("juror_task") == []
    payload = {"request_id": request["id"], "verdict": "approve"}
    chain.reject(request["jurors"][1], "POH_REVIEW_SUBMIT", payload, "conflict")
    assert chain.account("@tier0")["poh_tier"] == 0


def test_verdict_in_expiry_block_counts() -> None:
    accounts = [account_entry(j, 2, ["juror"]) for j in JURORS]
    accounts.append(account_entry("@tier0", 0))
    chain = Chain(accounts, {"poh_request_expiry_blocks": 2})
    request = open_async(chain)
    review(chain, request["jurors"][0], request["id"], "approve")
    assert chain.height + 1 == request["expires_at_height"]
    assert (
        review(chain, request["jurors"][1], request["id"], "approve")["status"]
        == "approved"
    )
    assert chain.account("@tier0")["poh_tier"] == 1


def test_juror_enroll_rejects(chain: Chain) -> None:
    chain.reject("@juror1", "ROLE_JUROR_ENROLL", {}, "conflict")
    chain.reject("@tier1", "ROLE_JUROR_ENROLL", {}, "tier_required")
    chain.reject("@member", "ROLE_JUROR_ENROLL", {"x": 1}, "invalid_payload")
    chain.ok("@member", "ROLE_JUROR_ENROLL", {})
    chain.reject("@member", "ROLE_JUROR_ENROLL", {}, "conflict")


def test_juror_tasks_follow_verdicts(chain: Chain) -> None:
    request = open_async(chain)
    juror = request["jurors"][0]
    assert [t["id"] for t in juror_tasks(chain.state, juror)] == [request["id"]]
    review(chain, juror, request["id"], "approve")
    assert juror_tasks(chain.state, juror) == []
    assert len(juror_tasks(chain.state, request["jurors"][1])) == 1
