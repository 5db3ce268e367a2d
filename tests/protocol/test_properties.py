"""Property tests over random sequences of valid and invalid transactions.

Hypothesis draws a sequence of steps. Each step builds a transaction from a
template (PoH, groups, governance, disputes, storage, content), well formed
or made invalid with an unknown payload field, or ends the block. Along the
way the test checks that:

- a transaction rejected at admission leaves the committed state unchanged;
- a transaction whose receipt is not ok changes nothing but its signer's
  nonce, also when it is included without admission;
- applying a block's transactions one by one gives the receipts of the block;
- every account's next nonce only grows, by one per included transaction;
- replaying the same envelopes from genesis through ``build_block``
  reproduces every block header, so every state root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from chain_harness import CID_A, CID_B, Chain, account_entry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weall.errors import TxRejected
from weall.protocol.block import build_block
from weall.protocol.execute import apply_tx
from weall.protocol.state import Overlay

JURORS = ["@juror1", "@juror2", "@juror3", "@juror4"]
OPERATORS = ["@operator1", "@operator2", "@operator3"]
USERS = ["@user0", "@user1", "@user2"]
CIDS = [CID_A, CID_B, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"]
MISSING_ID = "b" + "a" * 52
PARAMS = {
    "poh_async_jurors": 3,
    "poh_async_threshold": 2,
    "poh_live_jurors": 3,
    "poh_live_threshold": 2,
    "dispute_jurors": 3,
    "replication_factor": 2,
    "gov_quorum": 2,
    "gov_min_voting_blocks": 1,
    "gov_max_voting_blocks": 10,
    "pin_confirm_timeout_blocks": 3,
    "poh_request_expiry_blocks": 6,
    "dispute_expiry_blocks": 6,
}


def genesis_accounts() -> list[dict[str, Any]]:
    accounts = [account_entry(j, 2, ["juror"]) for j in JURORS]
    accounts += [account_entry(o, 2, ["node_operator"]) for o in OPERATORS]
    accounts += [account_entry(u, tier) for tier, u in enumerate(USERS)]
    return accounts


@dataclass
class Model:
    """The ids a test run has seen created, to aim transactions at."""

    chain: Chain
    accounts: list[str] = field(default_factory=list)
    ids: dict[str, list[str]] = field(default_factory=dict)
    registered: int = 0

    def pick(self, pool: list[str], seed: int) -> str:
        return pool[seed % len(pool)] if pool else MISSING_ID

    def known(self, name: str) -> list[str]:
        return self.ids.setdefault(name, [])


Template = Callable[[Model, int], tuple[str, str, dict[str, Any]]]


def t_register(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    return f"@new{m.registered + s % 2}", "ACCOUNT_REGISTER", {}


def t_async(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    return (
        m.pick(m.accounts, s),
        "POH_ASYNC_REQUEST_OPEN",
        {"evidence_cid": CIDS[s % 3]},
    )


def t_review(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    payload = {
        "request_id": m.pick(m.known("request_id"), s),
        "verdict": ("approve", "reject")[s % 2],
    }
    return m.pick(JURORS + USERS, s // 3), "POH_REVIEW_SUBMIT", payload


def t_live(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    return m.pick(m.accounts, s), "POH_LIVE_REQUEST_OPEN", {}


def t_live_verdict(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    attended = s % 3 != 0
    payload = {
        "request_id": m.pick(m.known("request_id"), s),
        "attended": attended,
        "verdict": "approve" if attended and s % 2 else "reject",
    }
    return m.pick(JURORS + USERS, s // 5), "POH_LIVE_VERDICT_SUBMIT", payload


def t_enroll(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    return m.pick(m.accounts, s), "ROLE_JUROR_ENROLL", {}


def t_group(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    payload = {
        "group_id": f"group{s % 4}",
        "name": "g",
        "policy": ("open", "approval")[s % 2],
    }
    return m.pick(m.accounts, s // 4), "GROUP_CREATE", payload


def t_join(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    return (
        m.pick(m.accounts, s),
        "GROUP_MEMBERSHIP_REQUEST",
        {"group_id": f"group{s % 4}"},
    )


def t_decide(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    payload = {
        "group_id": f"group{s % 4}",
        "account": m.pick(m.accounts, s // 4),
        "approve": s % 2 == 0,
    }
    return m.pick(m.accounts, s // 7), "GROUP_MEMBERSHIP_DECIDE", payload


def t_propose(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    payload: dict[str, Any] = {"title": "p", "body": "", "voting_blocks": 1 + s % 4}
    if s % 3 == 0:
        payload["action"] = {
            "type": "param_change",
            "key": "max_post_chars",
            "value": 100 + s,
        }
    if s % 5 == 0:
        payload["action"] = {"type": "param_change", "key": "reward_amount", "value": s}
    return m.pick(m.accounts, s // 3), "GOV_PROPOSAL_CREATE", payload


def t_vote(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    payload = {
        "proposal_id": m.pick(m.known("proposal_id"), s),
        "choice": ("yes", "no", "abstain")[s % 3],
    }
    return m.pick(m.accounts, s // 3), "GOV_VOTE_CAST", payload


def t_post(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    payload: dict[str, Any] = {"body": "x" * (1 + s % 200)}
    if s % 4 == 0:
        payload["media"] = [CIDS[s % 3]]
    if s % 5 == 0:
        payload["group_id"] = f"group{s % 4}"
    return m.pick(m.accounts, s), "CONTENT_POST_CREATE", payload


def t_dispute(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    payload = {"target_id": m.pick(m.known("post_id"), s), "reason": "r"}
    return m.pick(m.accounts, s // 2), "DISPUTE_OPEN", payload


def t_dispute_vote(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    payload = {
        "dispute_id": m.pick(m.known("dispute_id"), s),
        "verdict": ("uphold", "dismiss")[s % 2],
    }
    return m.pick(JURORS + USERS, s // 2), "DISPUTE_VOTE_SUBMIT", payload


def t_operator_enroll(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    return (
        m.pick(m.accounts, s),
        "STORAGE_OPERATOR_ENROLL",
        {"capacity_bytes": 1 + s * 100},
    )


def t_operator_withdraw(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    return m.pick(OPERATORS + USERS, s), "STORAGE_OPERATOR_WITHDRAW", {}


def t_pin(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    payload: dict[str, Any] = {"cid": CIDS[s % 3], "size_bytes": s * 10}
    signer = m.pick(m.accounts, s // 3)
    if s % 4 == 0:
        payload["on_behalf_of"] = m.pick(m.accounts, s // 2)
        signer = m.chain.producer_id if s % 8 == 0 else signer
    return signer, "IPFS_PIN_REQUEST", payload


def t_confirm(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    payload = {"pin_id": m.pick(m.known("pin_id"), s), "ok": s % 3 != 0}
    return m.pick(OPERATORS + USERS, s // 3), "IPFS_PIN_CONFIRM", payload


def t_heal(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    signer = m.chain.producer_id if s % 4 else m.pick(m.accounts, s)
    return signer, "IPFS_PIN_HEAL", {"pin_id": m.pick(m.known("pin_id"), s)}


def t_follow(m: Model, s: int) -> tuple[str, str, dict[str, Any]]:
    payload = {"target": m.pick(m.accounts, s // 2), "following": s % 2 == 0}
    return m.pick(m.accounts, s), "FOLLOW_SET", payload


TEMPLATES: list[Template] = [
    t_register,
    t_async,
    t_review,
    t_live,
    t_live_verdict,
    t_enroll,
    t_group,
    t_join,
    t_decide,
    t_propose,
    t_vote,
    t_post,
    t_dispute,
    t_dispute_vote,
    t_operator_enroll,
    t_operator_withdraw,
    t_pin,
    t_confirm,
    t_heal,
    t_follow,
]

# A step: (template index, seed, variant), or None to end the block.
# Variants: "valid" (well formed), "invalid" (an unknown payload field,
# rejected at admission), "forced" (invalid and included without admission).
STEP = st.one_of(
    st.none(),
    st.tuples(
        st.integers(0, len(TEMPLATES) - 1),
        st.integers(0, 10_000),
        st.sampled_from(["valid", "valid", "valid", "invalid", "forced"]),
    ),
)


def admit_and_queue(
    chain: Chain, signer: str, tx_type: str, payload: dict[str, Any]
) -> bool:
    """Admit a transaction, queue it if admitted, and return whether it was.

    Admission must not write to the committed state, whatever its outcome.
    """
    env = chain.envelope(signer, tx_type, payload)
    before = dict(chain.state.entries)
    try:
        chain.admit(env)
    except TxRejected:
        assert chain.state.entries == before
        return False
    assert chain.state.entries == before
    chain.include(env)
    return True


def check_each_tx_of_block(chain: Chain) -> list[dict[str, Any]]:
    """Apply the queued transactions one by one; failed ones touch only the nonce."""
    overlay = Overlay(chain.state)
    receipts = []
    for env in chain.pending:
        before = dict(overlay.writes)
        account_before = overlay.get("account", env.signer)
        receipt = apply_tx(
            overlay,
            env,
            height=chain.height + 1,
            timestamp_ms=chain.next_timestamp_ms,
            genesis=chain.info,
        )
        receipts.append(receipt)
        if receipt["ok"]:
            continue
        changed = {
            key
            for key, value in overlay.writes.items()
            if before.get(key, "-") != value
        }
        if account_before is None or env.tx_type == "ACCOUNT_REGISTER":
            assert changed == set(), (env.tx_type, receipt, changed)
            continue
        assert changed == {("account", env.signer)}, (env.tx_type, receipt, changed)
        account_after = overlay.get("account", env.signer)
        assert account_after == {
            **account_before,
            "next_nonce": account_before["next_nonce"] + 1,
        }
    return receipts


def commit_and_check(model: Model) -> None:
    chain = model.chain
    nonces_before = {a: chain.account(a)["next_nonce"] for a in model.accounts}
    included = [
        env.signer for env in chain.pending if env.tx_type != "ACCOUNT_REGISTER"
    ]
    expected_receipts = check_each_tx_of_block(chain)
    envelopes = list(chain.pending)
    receipts = chain.commit()
    assert receipts == expected_receipts
    for account_id, before in nonces_before.items():
        after = chain.account(account_id)["next_nonce"]
        assert after == before + included.count(account_id)
    for env, receipt in zip(envelopes, receipts, strict=True):
        if not receipt["ok"]:
            continue
        for name in ("request_id", "proposal_id", "dispute_id", "pin_id", "post_id"):
            if name in receipt:
                model.known(name).append(receipt[name])
        if env.tx_type == "ACCOUNT_REGISTER":
            model.accounts.append(env.signer)
            model.registered += 1


def replay_headers(chain: Chain) -> None:
    replay = Chain(genesis_accounts(), PARAMS)
    assert replay.info == chain.info
    for block in chain.blocks:
        result = build_block(
            replay.state,
            replay.head,
            block.envelopes,
            timestamp_ms=block.timestamp_ms,
            genesis=replay.info,
            producer_pubkey=replay.producer_key.pubkey,
            sign=replay.producer_key.sign,
        )
        assert result.header == block.header
        assert result.receipts == block.receipts
        replay.state.apply(result.state.changes())
        replay.head = result.header
    assert replay.state.entries == chain.state.entries


# Admission checks the gates before the payload, so an invalid payload from a
# signer below the gate reports the gate.
INVALID_CODES = frozenset(
    {
        "invalid_payload",
        "account_exists",
        "tier_required",
        "role_required",
        "economics_locked",
    }
)


def invalidate(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "unexpected_field": 1}


@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=st.lists(STEP, min_size=1, max_size=80))
def test_random_sequences_keep_invariants(
    steps: list[tuple[int, int, str] | None],
) -> None:
    chain = Chain(genesis_accounts(), PARAMS)
    model = Model(chain, accounts=[a["id"] for a in chain.document["accounts"]])
    for step in [*steps, None]:
        if step is None:
            commit_and_check(model)
            continue
        index, seed, variant = step
        signer, tx_type, payload = TEMPLATES[index](model, seed)
        if variant == "valid":
            admit_and_queue(chain, signer, tx_type, payload)
            continue
        bad = invalidate(payload)
        env = chain.envelope(signer, tx_type, bad)
        before = dict(chain.state.entries)
        with pytest.raises(TxRejected) as caught:
            chain.admit(env)
        assert caught.value.code in INVALID_CODES, (tx_type, caught.value)
        assert chain.state.entries == before
        if variant == "forced" and chain.state.get("account", signer) is not None:
            chain.include(env)
    replay_headers(chain)
