"""Property tests: a Hypothesis state machine drives a chain with valid and invalid transactions.

Each action reads the committed state to build a transaction that should
succeed: a verdict is signed by a juror the request assigned, a pin
confirmation by an operator the pin assigned, a vote on a proposal still
open. Other actions build invalid transactions of many kinds (wrong nonce,
bad signature, wrong signer, wrong chain, unknown type, unknown signer,
unknown payload field, and the tier, role and assignment gates) and check
the exact rejection code. Along the way the machine checks that:

- admission never writes to the committed state, whether it passes or not;
- an included transaction whose receipt is not ok changes nothing but its
  signer's nonce, including invalid ones included without admission;
- applying a block's transactions one by one gives the block's receipts;
- every account's next nonce only grows, by one per included transaction;
- the sum of all balances stays what genesis allocated;
- a replay from genesis reproduces every block header, so every state root.

Each run counts the successful transactions of every type and the invalid
kinds it tried, and the test fails when a count falls below its minimum, so
a generator that stops reaching reviews or votes cannot pass unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from typing import Any, Final

import pytest
from chain_harness import CHAIN_ID, Chain, account_entry, key_for
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from weall.errors import ProtocolError, TxRejected
from weall.protocol.envelope import Envelope, build_envelope, parse_envelope
from weall.protocol.execute import NONCE_WINDOW, apply_tx
from weall.protocol.rules.storage import pins_with_shortfall
from weall.protocol.state import Overlay

JURORS: Final = [f"@juror{i}" for i in range(1, 6)]
OPERATORS: Final = [f"@operator{i}" for i in range(1, 5)]
USERS: Final = {"@user0": 0, "@user1": 1, "@user2": 2, "@user3": 2}
REWARD_POOL: Final = "@rewards"
TREASURY: Final = "@treasury"
SYSTEM: Final = (REWARD_POOL, TREASURY)
PARAMS: Final = {
    "economics_lock_days": 0,
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
    "poh_request_expiry_blocks": 20,
    "dispute_expiry_blocks": 20,
    "reward_amount": 5,
    "reward_interval_blocks": 2,
    "treasury_voting_blocks": 6,
}
VERDICTS: Final = st.sampled_from(["approve", "approve", "approve", "reject"])

# How often ``act`` draws each action when it is possible. Actions that
# complete a request (verdicts, votes, confirmations) weigh more, because
# each needs an earlier action to have committed. The ``invalid_*`` actions
# build transactions that must be rejected.
ACTION_WEIGHTS: Final = {
    "register": 2,
    "open_async_request": 3,
    "review": 6,
    "open_live_request": 3,
    "live_verdict": 6,
    "enroll_juror": 1,
    "post": 3,
    "comment": 1,
    "open_dispute": 3,
    "dispute_vote": 6,
    "propose": 1,
    "vote": 6,
    "treasury_spend": 1,
    "transfer": 2,
    "claim_reward": 2,
    "pin_request": 3,
    "pin_confirm": 6,
    "heal": 2,
    "invalid_envelope": 4,
    "invalid_signer_key": 1,
    "invalid_payload_field": 1,
    "invalid_tier": 1,
    "invalid_reviewer": 2,
}
ENVELOPE_FAULTS: Final = (
    "nonce_too_low",
    "nonce_too_high",
    "bad_signature",
    "wrong_chain",
    "unsupported_type",
    "unknown_signer",
)

# Minimum counts over one default run: successful transactions by type,
# decisions reached, and invalid transactions by kind.
MIN_SUCCESSES: Final = {
    "ACCOUNT_REGISTER": 5,
    "POH_ASYNC_REQUEST_OPEN": 5,
    "POH_REVIEW_SUBMIT": 10,
    "POH_LIVE_REQUEST_OPEN": 3,
    "POH_LIVE_VERDICT_SUBMIT": 5,
    "CONTENT_POST_CREATE": 5,
    "DISPUTE_OPEN": 3,
    "DISPUTE_VOTE_SUBMIT": 5,
    "GOV_PROPOSAL_CREATE": 3,
    "GOV_VOTE_CAST": 10,
    "IPFS_PIN_REQUEST": 5,
    "IPFS_PIN_CONFIRM": 10,
    "BALANCE_TRANSFER": 3,
    "REWARD_CLAIM": 3,
    "TREASURY_SPEND_PROPOSE": 2,
}
MIN_OUTCOMES: Final = {
    "poh_async_approved": 2,
    "poh_live_approved": 1,
    "dispute_decided": 1,
    "proposal_passed": 1,
    "pin_durable": 2,
}
INVALID_KINDS: Final = (
    "nonce_too_low",
    "nonce_too_high",
    "bad_signature",
    "wrong_chain",
    "unsupported_type",
    "wrong_signer",
    "unknown_signer",
    "unknown_field",
    "tier_required",
    "role_required",
    "not_assigned",
)
MIN_INVALID: Final = 2

# Filled by every run of the machine in one test, then checked by that test.
SUCCESSES: Counter[str] = Counter()
OUTCOMES: Counter[str] = Counter()
INVALID: Counter[str] = Counter()


def genesis_accounts() -> list[dict[str, Any]]:
    accounts = [account_entry(j, 2, ["juror"]) for j in JURORS]
    accounts += [account_entry(o, 2, ["node_operator"]) for o in OPERATORS]
    accounts += [account_entry(u, tier, balance=1000) for u, tier in USERS.items()]
    accounts.append(account_entry(REWARD_POOL, 0, balance=200))
    accounts.append(account_entry(TREASURY, 0, balance=1000))
    return accounts


def fresh_cid(n: int) -> str:
    digest = hashlib.sha256(f"property-cid-{n}".encode()).digest()
    return "b" + base64.b32encode(digest).decode().lower().rstrip("=")


class ProtocolMachine(RuleBasedStateMachine):
    """One chain per example.

    ``act`` runs one action a step, drawn by weight among the actions possible
    in the committed state. Valid actions queue a transaction and may end the
    block. ``end_block`` commits whatever is queued.
    """

    def __init__(self) -> None:
        super().__init__()
        # Committed entries by kind, valid until the next commit.
        self.cache: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.chain = Chain(genesis_accounts(), PARAMS)
        self.accounts = sorted(a["id"] for a in self.chain.document["accounts"])
        self.supply = self._supply()
        self.floors = {a: self._next_nonce(a) for a in self.accounts}
        # Keys of what the pending block already does, so that two queued
        # transactions do not undo each other (two verdicts of one juror).
        self.busy: set[tuple[str, ...]] = set()
        self.registered = 0
        self.cids = 0
        self.unknown = 0

    # -- reading the committed state -----------------------------------------

    def _records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """Return the committed entries of ``kind`` by key; read them, never change them."""
        if kind not in self.cache:
            self.cache[kind] = sorted(
                (key, value)
                for (entry_kind, key), value in self.chain.state.entries.items()
                if entry_kind == kind
            )
        return self.cache[kind]

    def _account(self, account_id: str) -> dict[str, Any]:
        """Return the committed account record itself; read it, never change it."""
        record: dict[str, Any] = self.chain.state.entries[("account", account_id)]
        return record

    def _next_nonce(self, account_id: str) -> int:
        return int(self._account(account_id)["next_nonce"])

    def _supply(self) -> int:
        return sum(value["balance"] for _, value in self._records("account"))

    def _people(self, min_tier: int = 0) -> list[str]:
        """Accounts that may act for themselves: every account but the system ones."""
        return [
            a
            for a in self.accounts
            if a not in SYSTEM
            and a != self.chain.producer_id
            and self._account(a)["poh_tier"] >= min_tier
        ]

    def _free(self, *key: str) -> bool:
        return key not in self.busy

    # -- queueing ------------------------------------------------------------

    def _queue(
        self,
        data: st.DataObject,
        signer: str,
        tx_type: str,
        payload: dict[str, Any],
    ) -> None:
        """Admit a transaction that should pass and queue it; maybe end the block.

        About half of the transactions end their block, so blocks hold two
        on average and the next rules see their effects in the committed
        state.
        """
        # A shallow copy suffices: MemoryState hands out deep copies, so only
        # a write through the state can change it.
        before = dict(self.chain.state.entries)
        env = self.chain.envelope(signer, tx_type, payload)
        self.chain.admit(env)
        assert self.chain.state.entries == before, "admission wrote to the state"
        self.chain.include(env)
        if data.draw(st.booleans(), label="end block"):
            self._commit_and_check()

    # -- accounts and proof of personhood ------------------------------------

    def register(self, data: st.DataObject) -> None:
        self.registered += 1
        self._queue(data, f"@new{self.registered}", "ACCOUNT_REGISTER", {})

    def _applicants(self, tier: int) -> list[str]:
        return [
            a
            for a in self._people()
            if self._account(a)["poh_tier"] == tier
            and self.chain.get("poh_open", a) is None
            and self._free("applicant", a)
        ]

    def _can_open_async_request(self) -> bool:
        return bool(self._applicants(0))

    def open_async_request(self, data: st.DataObject) -> None:
        applicant = data.draw(st.sampled_from(self._applicants(0)))
        self.busy.add(("applicant", applicant))
        cid = fresh_cid(self.cids)
        self.cids += 1
        self._queue(data, applicant, "POH_ASYNC_REQUEST_OPEN", {"evidence_cid": cid})

    def _can_open_live_request(self) -> bool:
        return bool(self._applicants(1))

    def open_live_request(self, data: st.DataObject) -> None:
        applicant = data.draw(st.sampled_from(self._applicants(1)))
        self.busy.add(("applicant", applicant))
        self._queue(data, applicant, "POH_LIVE_REQUEST_OPEN", {})

    def _verdict_slots(self, request_type: str) -> list[tuple[str, str]]:
        return [
            (request_id, juror)
            for request_id, request in self._records("poh_request")
            if request["type"] == request_type and request["status"] == "open"
            for juror in request["jurors"]
            if juror not in request["verdicts"]
            and self._free("verdict", request_id, juror)
        ]

    def _can_review(self) -> bool:
        return bool(self._verdict_slots("async"))

    def review(self, data: st.DataObject) -> None:
        request_id, juror = data.draw(st.sampled_from(self._verdict_slots("async")))
        verdict = data.draw(VERDICTS)
        self.busy.add(("verdict", request_id, juror))
        payload = {"request_id": request_id, "verdict": verdict}
        self._queue(data, juror, "POH_REVIEW_SUBMIT", payload)

    def _can_live_verdict(self) -> bool:
        return bool(self._verdict_slots("live"))

    def live_verdict(self, data: st.DataObject) -> None:
        request_id, juror = data.draw(st.sampled_from(self._verdict_slots("live")))
        verdict = data.draw(VERDICTS)
        absent = data.draw(st.booleans())
        self.busy.add(("verdict", request_id, juror))
        # Only an attending juror may approve.
        attended = verdict == "approve" or not absent
        payload = {"request_id": request_id, "attended": attended, "verdict": verdict}
        self._queue(data, juror, "POH_LIVE_VERDICT_SUBMIT", payload)

    def _juror_candidates(self) -> list[str]:
        return [
            a
            for a in self._people(2)
            if "juror" not in self._account(a)["roles"] and self._free("role", a)
        ]

    def _can_enroll_juror(self) -> bool:
        return bool(self._juror_candidates())

    def enroll_juror(self, data: st.DataObject) -> None:
        account = data.draw(st.sampled_from(self._juror_candidates()))
        self.busy.add(("role", account))
        self._queue(data, account, "ROLE_JUROR_ENROLL", {})

    # -- content and disputes ------------------------------------------------

    def post(self, data: st.DataObject) -> None:
        author = data.draw(st.sampled_from(self._people(2)))
        size = data.draw(st.integers(1, 300))
        # A passed proposal may have lowered max_post_chars to 100.
        payload: dict[str, Any] = {
            "body": "x" * min(size, self.chain.params["max_post_chars"])
        }
        media = [cid for cid, _ in self._records("media")]
        if media and data.draw(st.booleans()):
            payload["media"] = [data.draw(st.sampled_from(media))]
        self._queue(data, author, "CONTENT_POST_CREATE", payload)

    def _visible(self, kind: str) -> list[str]:
        return [
            object_id
            for object_id, item in self._records(kind)
            if not item["deleted"] and not item["hidden"]
        ]

    def _can_comment(self) -> bool:
        return bool(self._visible("post"))

    def comment(self, data: st.DataObject) -> None:
        parent = data.draw(st.sampled_from(self._visible("post")))
        author = data.draw(st.sampled_from(self._people(2)))
        self._queue(
            data, author, "CONTENT_COMMENT_CREATE", {"parent_id": parent, "body": "re"}
        )

    def _dispute_targets(self) -> list[tuple[str, str]]:
        jurors = {key.split("/", 1)[1] for key, _ in self._records("role")} & {
            a for a in self.accounts if "juror" in self._account(a)["roles"]
        }
        pairs = []
        for kind in ("post", "comment"):
            for object_id, item in self._records(kind):
                if item["deleted"] or self.chain.get("dispute_open", object_id):
                    continue
                if not self._free("dispute", object_id):
                    continue
                for opener in self._people(2):
                    # Three jurors must remain besides the opener and the author.
                    if len(jurors - {opener, item["author"]}) >= 3:
                        pairs.append((object_id, opener))
        return pairs

    def _can_open_dispute(self) -> bool:
        return bool(self._dispute_targets())

    def open_dispute(self, data: st.DataObject) -> None:
        target, opener = data.draw(st.sampled_from(self._dispute_targets()))
        self.busy.add(("dispute", target))
        self._queue(data, opener, "DISPUTE_OPEN", {"target_id": target, "reason": "r"})

    def _dispute_slots(self) -> list[tuple[str, str]]:
        return [
            (dispute_id, juror)
            for dispute_id, dispute in self._records("dispute")
            if dispute["status"] == "open"
            for juror in dispute["jurors"]
            if juror not in dispute["votes"]
            and self._free("dispute_vote", dispute_id, juror)
        ]

    def _can_dispute_vote(self) -> bool:
        return bool(self._dispute_slots())

    def dispute_vote(self, data: st.DataObject) -> None:
        dispute_id, juror = data.draw(st.sampled_from(self._dispute_slots()))
        verdict = data.draw(st.sampled_from(["uphold", "dismiss"]))
        self.busy.add(("dispute_vote", dispute_id, juror))
        payload = {"dispute_id": dispute_id, "verdict": verdict}
        self._queue(data, juror, "DISPUTE_VOTE_SUBMIT", payload)

    # -- governance and economics ----------------------------------------------

    def propose(self, data: st.DataObject) -> None:
        voting_blocks = data.draw(st.integers(2, 8))
        limit = data.draw(st.none() | st.integers(100, 5000))
        proposer = data.draw(st.sampled_from(self._people(2)))
        payload: dict[str, Any] = {
            "title": "p",
            "body": "",
            "voting_blocks": voting_blocks,
        }
        if limit is not None:
            payload["action"] = {
                "type": "param_change",
                "key": "max_post_chars",
                "value": limit,
            }
        self._queue(data, proposer, "GOV_PROPOSAL_CREATE", payload)

    def _ballots(self) -> list[tuple[str, str]]:
        next_height = self.chain.height + 1
        return [
            (proposal_id, voter)
            for proposal_id, proposal in self._records("gov_proposal")
            if proposal["status"] == "open" and next_height <= proposal["close_height"]
            for voter in self._people(2)
            if self._free("ballot", proposal_id, voter)
        ]

    def _can_vote(self) -> bool:
        return bool(self._ballots())

    def vote(self, data: st.DataObject) -> None:
        ballots = self._ballots()
        # The proposal first, so that each open proposal gathers votes.
        proposal_id = data.draw(st.sampled_from(sorted({p for p, _ in ballots})))
        voter = data.draw(st.sampled_from([v for p, v in ballots if p == proposal_id]))
        choice = data.draw(st.sampled_from(["yes", "yes", "yes", "no", "abstain"]))
        self.busy.add(("ballot", proposal_id, voter))
        payload = {"proposal_id": proposal_id, "choice": choice}
        self._queue(data, voter, "GOV_VOTE_CAST", payload)

    def _can_treasury_spend(self) -> bool:
        return bool(self._account(TREASURY)["balance"] > 0)

    def treasury_spend(self, data: st.DataObject) -> None:
        proposer = data.draw(st.sampled_from(self._people(2)))
        share = data.draw(st.integers(1, 10))
        to = data.draw(st.sampled_from(self._people()))
        amount = max(1, self._account(TREASURY)["balance"] * share // 20)
        payload = {"to": to, "amount": amount, "memo": ""}
        self._queue(data, proposer, "TREASURY_SPEND_PROPOSE", payload)

    def _payers(self) -> list[str]:
        return [
            a
            for a in self._people(1)
            if self._account(a)["balance"] > 0 and self._free("payer", a)
        ]

    def _can_transfer(self) -> bool:
        return bool(self._payers())

    def transfer(self, data: st.DataObject) -> None:
        sender = data.draw(st.sampled_from(self._payers()))
        share = data.draw(st.integers(1, 10))
        self.busy.add(("payer", sender))
        receivers = [a for a in self.accounts if a != sender]
        to = data.draw(st.sampled_from(receivers))
        amount = max(1, self._account(sender)["balance"] * share // 10)
        self._queue(data, sender, "BALANCE_TRANSFER", {"to": to, "amount": amount})

    def _claimants(self) -> list[str]:
        if self._account(REWARD_POOL)["balance"] < PARAMS["reward_amount"]:
            return []
        next_height = self.chain.height + 1
        return [
            a
            for a in self._people(1)
            if self._free("claim", a)
            and (
                (last := self._account(a).get("last_reward_height")) is None
                or next_height - last >= PARAMS["reward_interval_blocks"]
            )
        ]

    def _can_claim_reward(self) -> bool:
        return bool(self._claimants())

    def claim_reward(self, data: st.DataObject) -> None:
        claimant = data.draw(st.sampled_from(self._claimants()))
        self.busy.add(("claim", claimant))
        self._queue(data, claimant, "REWARD_CLAIM", {})

    # -- storage ----------------------------------------------------------------

    def _can_pin_request(self) -> bool:
        return bool(self._people(1))

    def pin_request(self, data: st.DataObject) -> None:
        cid = fresh_cid(self.cids)
        self.cids += 1
        owner = data.draw(st.sampled_from(self._people(1)))
        size = data.draw(st.integers(0, 5000))
        behalf = data.draw(st.booleans())
        payload: dict[str, Any] = {"cid": cid, "size_bytes": size}
        signer = owner
        if behalf:
            payload["on_behalf_of"] = owner
            signer = self.chain.producer_id
        operators = [o for o in self._operators() if o != owner]
        if len(operators) < PARAMS["replication_factor"]:
            return
        self._queue(data, signer, "IPFS_PIN_REQUEST", payload)

    def _confirm_slots(self) -> list[tuple[str, str, bool]]:
        """Targets that may report now, and whether their report must be ok.

        Repeating the current report is a conflict, so a target that reported
        a loss may only report ok next.
        """
        slots = []
        for pin_id, pin in self._records("pin"):
            for target in pin["targets"]:
                operator = target["operator"]
                if not self._free("confirm", pin_id, operator):
                    continue
                confirmation = target["confirmation"]
                if confirmation is None:
                    slots.append((pin_id, operator, False))
                elif not confirmation["ok"]:
                    slots.append((pin_id, operator, True))
        return slots

    def _can_pin_confirm(self) -> bool:
        return bool(self._confirm_slots())

    def pin_confirm(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(self._confirm_slots()))
        fail = data.draw(st.integers(0, 5))
        pin_id, operator, must_be_ok = slot
        self.busy.add(("confirm", pin_id, operator))
        # Mostly ok; one first report in six reports that the content is lost.
        payload = {"pin_id": pin_id, "ok": must_be_ok or fail != 0}
        self._queue(data, operator, "IPFS_PIN_CONFIRM", payload)

    def _operators(self) -> list[str]:
        return [
            key.split("/", 1)[1]
            for key, _ in self._records("role")
            if key.startswith("node_operator/")
        ]

    def _shortfalls(self) -> list[str]:
        """Pins with a shortfall that at least one spare operator could heal."""
        found = pins_with_shortfall(
            self.chain.state, self.chain.height + 1, self.chain.params, 20
        )
        healable = []
        for status in found:
            pin = self.chain.get("pin", status["pin_id"])
            assert pin is not None
            taken = {t["operator"] for t in pin["targets"] + pin["released"]}
            spare = set(self._operators()) - taken - {pin["owner"]}
            if spare and self._free("heal", pin["id"]):
                healable.append(pin["id"])
        return healable

    def _can_heal(self) -> bool:
        return bool(self._shortfalls())

    def heal(self, data: st.DataObject) -> None:
        pin_id = data.draw(st.sampled_from(self._shortfalls()))
        self.busy.add(("heal", pin_id))
        self._queue(data, self.chain.producer_id, "IPFS_PIN_HEAL", {"pin_id": pin_id})

    # -- blocks -----------------------------------------------------------------

    @rule(data=st.data())
    def act(self, data: st.DataObject) -> None:
        """Run one action, valid or invalid, drawn by weight among those possible now."""
        choices = [
            name
            for name, weight in ACTION_WEIGHTS.items()
            if getattr(self, f"_can_{name}", lambda: True)()
            for _ in range(weight)
        ]
        getattr(self, data.draw(st.sampled_from(choices), label="action"))(data)

    @rule()
    def end_block(self) -> None:
        self._commit_and_check()

    def _commit_and_check(self) -> None:
        chain = self.chain
        envelopes = list(chain.pending)
        expected = self._apply_one_by_one(envelopes)
        receipts = chain.commit()
        self.busy.clear()
        self.cache.clear()
        assert receipts == expected
        included = Counter(
            env.signer for env in envelopes if env.tx_type != "ACCOUNT_REGISTER"
        )
        for account_id, floor in self.floors.items():
            after = self._next_nonce(account_id)
            assert after == floor + included[account_id], account_id
            self.floors[account_id] = after
        for env, receipt in zip(envelopes, receipts, strict=True):
            if receipt["ok"]:
                self._count_success(env, receipt)
        for _, proposal in self._records("gov_proposal"):
            if proposal.get("closed_height") == chain.height:
                OUTCOMES[f"proposal_{proposal['status']}"] += 1

    def _count_success(self, env: Envelope, receipt: dict[str, Any]) -> None:
        SUCCESSES[env.tx_type] += 1
        if env.tx_type == "ACCOUNT_REGISTER":
            self.accounts = sorted({*self.accounts, env.signer})
            self.floors[env.signer] = self._next_nonce(env.signer)
        status = receipt.get("status")
        if env.tx_type == "POH_REVIEW_SUBMIT" and status == "approved":
            OUTCOMES["poh_async_approved"] += 1
        if env.tx_type == "POH_LIVE_VERDICT_SUBMIT" and status == "approved":
            OUTCOMES["poh_live_approved"] += 1
        if env.tx_type == "DISPUTE_VOTE_SUBMIT" and status in ("upheld", "dismissed"):
            OUTCOMES["dispute_decided"] += 1
        if env.tx_type == "IPFS_PIN_CONFIRM":
            pin = self.chain.get("pin", receipt["pin_id"])
            assert pin is not None
            confirmed = sum(
                1
                for t in pin["targets"]
                if t["confirmation"] is not None and t["confirmation"]["ok"]
            )
            if confirmed == pin["replication_factor"]:
                OUTCOMES["pin_durable"] += 1

    def _apply_one_by_one(self, envelopes: list[Envelope]) -> list[dict[str, Any]]:
        """Apply the queued transactions one by one; failed ones touch only the nonce."""
        chain = self.chain
        overlay = Overlay(chain.state)
        receipts = []
        for env in envelopes:
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
                key for key, value in overlay.writes.items() if before.get(key) != value
            }
            if account_before is None or env.tx_type == "ACCOUNT_REGISTER":
                assert changed == set(), (env.tx_type, receipt, changed)
                continue
            assert changed == {("account", env.signer)}, (env.tx_type, receipt)
            assert overlay.get("account", env.signer) == {
                **account_before,
                "next_nonce": account_before["next_nonce"] + 1,
            }
        return receipts

    # -- invalid transactions -------------------------------------------------

    def _expect_rejected(
        self, env: Envelope, code: str, *, force: bool = False
    ) -> None:
        """Check that admission rejects ``env`` with ``code`` and writes nothing.

        With ``force`` the transaction is then included without admission,
        and ``end_block`` checks that its receipt changes only the nonce.
        """
        before = dict(self.chain.state.entries)
        with pytest.raises(TxRejected) as caught:
            self.chain.admit(env)
        assert caught.value.code == code, (env.tx_type, caught.value)
        assert self.chain.state.entries == before
        if force:
            self.chain.include(env)

    def _signed(
        self,
        signer: str,
        tx_type: str,
        payload: dict[str, Any],
        *,
        key_of: str | None = None,
        nonce: int | None = None,
        chain_id: str = CHAIN_ID,
    ) -> dict[str, Any]:
        return build_envelope(
            key_for(key_of or signer),
            chain_id=chain_id,
            tx_type=tx_type,
            signer=signer,
            nonce=self.chain.next_nonce(signer) if nonce is None else nonce,
            payload=payload,
        )

    def invalid_envelope(self, data: st.DataObject) -> None:
        """Nonce, signature, chain, type and signer faults: never included."""
        kind = data.draw(st.sampled_from(ENVELOPE_FAULTS))
        signer = data.draw(st.sampled_from(self._people(2)))
        post = {"body": "never"}
        committed = self._next_nonce(signer)
        if kind == "nonce_too_low":
            document = self._signed(
                signer, "CONTENT_POST_CREATE", post, nonce=committed - 1
            )
            self._expect_rejected(parse_envelope(document), kind)
        elif kind == "nonce_too_high":
            nonce = committed + NONCE_WINDOW
            document = self._signed(signer, "CONTENT_POST_CREATE", post, nonce=nonce)
            self._expect_rejected(parse_envelope(document), kind)
        elif kind == "bad_signature":
            document = self._signed(signer, "CONTENT_POST_CREATE", post)
            document["payload"] = {"body": "changed after signing"}
            env = parse_envelope(document)
            with pytest.raises(TxRejected) as caught:
                env.verify_signature()
            assert caught.value.code == kind
        elif kind == "wrong_chain":
            document = self._signed(
                signer, "CONTENT_POST_CREATE", post, chain_id="weall-other"
            )
            self._expect_rejected(parse_envelope(document), kind)
        elif kind == "unsupported_type":
            document = self._signed(signer, "CONTENT_POST_CREATE", post)
            document["tx_type"] = "CONTENT_TELEPORT"
            with pytest.raises(ProtocolError) as caught_type:
                parse_envelope(document)
            assert caught_type.value.code == kind
        else:
            self.unknown += 1
            ghost = f"@ghost{self.unknown}"
            document = self._signed(ghost, "CONTENT_POST_CREATE", post, nonce=1)
            self._expect_rejected(parse_envelope(document), kind)
        INVALID[kind] += 1

    def invalid_signer_key(self, data: st.DataObject) -> None:
        """A valid signature by another account's key."""
        force = data.draw(st.booleans(), label="include anyway")
        signer = data.draw(st.sampled_from(self._people(2)))
        other = data.draw(st.sampled_from([a for a in self.accounts if a != signer]))
        document = self._signed(
            signer, "CONTENT_POST_CREATE", {"body": "never"}, key_of=other
        )
        env = parse_envelope(document)
        env.verify_signature()
        self._expect_rejected(env, "key_not_allowed", force=force)
        INVALID["wrong_signer"] += 1

    def invalid_payload_field(self, data: st.DataObject) -> None:
        force = data.draw(st.booleans(), label="include anyway")
        signer = data.draw(st.sampled_from(self._people(2)))
        payload = {"body": "x", "unexpected_field": 1}
        env = self.chain.envelope(signer, "CONTENT_POST_CREATE", payload)
        self._expect_rejected(env, "invalid_payload", force=force)
        INVALID["unknown_field"] += 1

    def _low_tiers(self) -> list[str]:
        return [a for a in self._people() if self._account(a)["poh_tier"] < 2]

    def _can_invalid_tier(self) -> bool:
        return bool(self._low_tiers())

    def invalid_tier(self, data: st.DataObject) -> None:
        force = data.draw(st.booleans(), label="include anyway")
        signer = data.draw(st.sampled_from(self._low_tiers()))
        env = self.chain.envelope(signer, "CONTENT_POST_CREATE", {"body": "x"})
        self._expect_rejected(env, "tier_required", force=force)
        INVALID["tier_required"] += 1

    def _open_async(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (request_id, request)
            for request_id, request in self._records("poh_request")
            if request["type"] == "async" and request["status"] == "open"
        ]

    def _can_invalid_reviewer(self) -> bool:
        return bool(self._open_async())

    def invalid_reviewer(self, data: st.DataObject) -> None:
        """A review by a non-juror, or by a juror the request did not assign."""
        force = data.draw(st.booleans(), label="include anyway")
        request_id, request = data.draw(st.sampled_from(self._open_async()))
        payload = {"request_id": request_id, "verdict": "approve"}
        jurors = [a for a in self._people() if "juror" in self._account(a)["roles"]]
        outsiders = [a for a in self._people() if a not in jurors]
        unassigned = [a for a in jurors if a not in request["jurors"]]
        kind = "not_assigned" if unassigned and data.draw(st.booleans()) else None
        if kind is None:
            kind, signer = "role_required", data.draw(st.sampled_from(outsiders))
        else:
            signer = data.draw(st.sampled_from(unassigned))
        env = self.chain.envelope(signer, "POH_REVIEW_SUBMIT", payload)
        self._expect_rejected(env, kind, force=force)
        INVALID[kind] += 1

    # -- invariants and teardown ------------------------------------------------

    @invariant()
    def supply_is_constant(self) -> None:
        assert self._supply() == self.supply

    def teardown(self) -> None:
        self._commit_and_check()
        self.chain.replay()


def _run(max_examples: int, steps: int, *, derandomize: bool) -> None:
    SUCCESSES.clear()
    OUTCOMES.clear()
    INVALID.clear()
    run_state_machine_as_test(
        ProtocolMachine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            derandomize=derandomize,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


def _assert_coverage(scale: int = 1) -> None:
    low = {
        name: SUCCESSES[name]
        for name, minimum in MIN_SUCCESSES.items()
        if SUCCESSES[name] < minimum * scale
    }
    assert low == {}, f"too few successes: {low}; all: {dict(SUCCESSES)}"
    missing = {
        name: OUTCOMES[name]
        for name, minimum in MIN_OUTCOMES.items()
        if OUTCOMES[name] < minimum * scale
    }
    assert missing == {}, f"too few outcomes: {missing}; all: {dict(OUTCOMES)}"
    rare = {
        kind: INVALID[kind] for kind in INVALID_KINDS if INVALID[kind] < MIN_INVALID
    }
    assert rare == {}, f"too few invalid transactions: {rare}"


def test_protocol_state_machine() -> None:
    # Derandomized, so the default run is the same sequence every time and
    # its coverage minimums cannot flake.
    _run(max_examples=60, steps=80, derandomize=True)
    _assert_coverage()


@pytest.mark.long
def test_protocol_state_machine_long() -> None:
    _run(max_examples=300, steps=80, derandomize=False)
    _assert_coverage(scale=5)
