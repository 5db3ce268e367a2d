"""Admission and in-block rules of the account, social, content and economic types.

Every rejection is checked twice: at admission, where it raises
``TxRejected``, and inside a block, where the same transaction included
without admission gets an ``ok: false`` receipt with the same code and still
consumes the signer's nonce.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import CID, DEFAULT_ACCOUNTS, AccountSpec, Chain, key_pair

from weall.errors import TxRejected
from weall.protocol.execute import NONCE_WINDOW
from weall.protocol.keys import KeyPair
from weall.protocol.params import DAY_MS, GENESIS_DEFAULTS

TREASURY = AccountSpec("@treasury", 0, (), 500)
REWARD_POOL = AccountSpec("@rewards", 0, (), 50)


@pytest.fixture
def chain() -> Chain:
    return Chain()


@pytest.fixture
def unlocked() -> Chain:
    """A chain unlocked from genesis on, with a treasury and a reward pool."""
    return Chain(
        accounts=(*DEFAULT_ACCOUNTS, TREASURY, REWARD_POOL),
        params={"economics_lock_days": 0},
    )


def expect_rejected(
    chain: Chain,
    code: str,
    signer: str,
    tx_type: str,
    payload: dict[str, Any],
    *,
    key: KeyPair | None = None,
) -> TxRejected:
    """Check that ``code`` rejects the transaction at admission and in a block."""
    env = chain.tx(signer, tx_type, payload, key=key)
    with pytest.raises(TxRejected) as caught:
        chain.admit(env)
    assert caught.value.code == code, caught.value
    nonce_before = chain.next_nonce(signer)
    result = chain.block(env)
    (receipt,) = result.receipts
    assert receipt["ok"] is False, receipt
    assert receipt["code"] == code, receipt
    changed = [(kind, entry_key) for kind, entry_key, _ in result.state.changes()]
    if tx_type == "ACCOUNT_REGISTER":
        assert changed == [], changed
    else:
        assert changed == [("account", signer)], changed
        assert chain.next_nonce(signer) == nonce_before + 1
    return caught.value


def admission_error(chain: Chain, env: Any, *, now_ms: int | None = None) -> TxRejected:
    with pytest.raises(TxRejected) as caught:
        chain.admit(env, now_ms=now_ms)
    return caught.value


def post(chain: Chain, author: str = "@alice", body: str = "hello") -> str:
    return chain.ok(author, "CONTENT_POST_CREATE", {"body": body})["post_id"]


def comment(chain: Chain, parent_id: str, author: str = "@bob") -> str:
    receipt = chain.ok(
        author, "CONTENT_COMMENT_CREATE", {"parent_id": parent_id, "body": "re"}
    )
    return receipt["comment_id"]


def issue_session(
    chain: Chain,
    scope: list[str],
    *,
    signer: str = "@alice",
    ttl_ms: int = 60_000,
    name: str = "@alice-session",
) -> KeyPair:
    session = key_pair(name)
    chain.ok(
        signer,
        "ACCOUNT_SESSION_KEY_ISSUE",
        {
            "pubkey": session.pubkey,
            "scope": scope,
            "expires_at_ms": chain.now_ms + ttl_ms,
        },
    )
    return session


# -- ACCOUNT_REGISTER ----------------------------------------------------------------


def test_register_creates_account(chain: Chain) -> None:
    receipt = chain.run("@erin", "ACCOUNT_REGISTER", {})
    assert receipt == {"ok": True, "account": "@erin"}


def test_register_account_record(chain: Chain) -> None:
    chain.ok("@erin", "ACCOUNT_REGISTER", {})
    account = chain.account("@erin")
    assert account["keys"] == [key_pair("@erin").pubkey]
    assert account["poh_tier"] == 0
    assert account["roles"] == []
    assert account["next_nonce"] == 1
    assert account["balance"] == 0
    assert account["created_height"] == 1


def test_register_counts_accounts(chain: Chain) -> None:
    before = chain.get("counter", "accounts")["n"]
    chain.ok("@erin", "ACCOUNT_REGISTER", {})
    assert chain.get("counter", "accounts")["n"] == before + 1


def test_register_then_nonce_1(chain: Chain) -> None:
    chain.ok("@erin", "ACCOUNT_REGISTER", {})
    assert chain.run("@erin", "PROFILE_UPDATE", {"bio": "new here"})["ok"]


def test_register_rejects_nonzero_nonce(chain: Chain) -> None:
    env = chain.tx("@erin", "ACCOUNT_REGISTER", {}, nonce=1)
    error = admission_error(chain, env)
    assert error.code == "nonce_too_high"
    assert error.details == {"next_nonce": 0}


def test_register_rejects_nonzero_nonce_in_block(chain: Chain) -> None:
    env = chain.tx("@erin", "ACCOUNT_REGISTER", {}, nonce=1)
    (receipt,) = chain.block(env).receipts
    assert receipt["code"] == "nonce_too_high"
    assert chain.get("account", "@erin") is None


def test_register_rejects_existing_account(chain: Chain) -> None:
    expect_rejected(chain, "account_exists", "@alice", "ACCOUNT_REGISTER", {})


def test_register_rejects_payload(chain: Chain) -> None:
    expect_rejected(
        chain, "invalid_payload", "@erin", "ACCOUNT_REGISTER", {"name": "x"}
    )


def test_register_twice_in_one_block(chain: Chain) -> None:
    first = chain.tx("@erin", "ACCOUNT_REGISTER", {})
    second = chain.tx("@erin", "ACCOUNT_REGISTER", {}, key=key_pair("@other"))
    chain.admit(first)
    chain.admit(second)
    receipts = chain.block(first, second).receipts
    assert receipts[0]["ok"] is True
    assert receipts[1]["code"] == "account_exists"
    assert chain.account("@erin")["keys"] == [key_pair("@erin").pubkey]


def test_unknown_signer_rejected(chain: Chain) -> None:
    env = chain.tx("@nobody", "PROFILE_UPDATE", {"bio": "x"}, nonce=1)
    assert admission_error(chain, env).code == "unknown_signer"


def test_unknown_signer_rejected_in_block(chain: Chain) -> None:
    env = chain.tx("@nobody", "PROFILE_UPDATE", {"bio": "x"}, nonce=1)
    (receipt,) = chain.block(env).receipts
    assert receipt["code"] == "unknown_signer"


# -- ACCOUNT_KEY_ADD / ACCOUNT_KEY_REVOKE ----------------------------------------------


def test_key_add_adds_key(chain: Chain) -> None:
    new = key_pair("@alice-2")
    chain.ok("@alice", "ACCOUNT_KEY_ADD", {"pubkey": new.pubkey})
    assert chain.account("@alice")["keys"] == [key_pair("@alice").pubkey, new.pubkey]


def test_key_add_new_key_signs(chain: Chain) -> None:
    new = key_pair("@alice-2")
    chain.ok("@alice", "ACCOUNT_KEY_ADD", {"pubkey": new.pubkey})
    assert chain.run("@alice", "PROFILE_UPDATE", {"bio": "x"}, key=new)["ok"]


def test_key_add_limit_8(chain: Chain) -> None:
    assert GENESIS_DEFAULTS["max_keys"] == 8
    for index in range(7):
        chain.ok(
            "@alice", "ACCOUNT_KEY_ADD", {"pubkey": key_pair(f"@extra{index}").pubkey}
        )
    assert len(chain.account("@alice")["keys"]) == 8
    error = expect_rejected(
        chain,
        "invalid_payload",
        "@alice",
        "ACCOUNT_KEY_ADD",
        {"pubkey": key_pair("@extra9").pubkey},
    )
    assert "at most 8" in error.message


def test_key_add_rejects_existing_key(chain: Chain) -> None:
    pubkey = key_pair("@alice").pubkey
    expect_rejected(chain, "conflict", "@alice", "ACCOUNT_KEY_ADD", {"pubkey": pubkey})


def test_key_add_rejects_session_key_as_key(chain: Chain) -> None:
    session = issue_session(chain, ["PROFILE_UPDATE"])
    expect_rejected(
        chain, "conflict", "@alice", "ACCOUNT_KEY_ADD", {"pubkey": session.pubkey}
    )


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({}, id="missing"),
        pytest.param({"pubkey": "z6Mkabc"}, id="malformed"),
        pytest.param({"pubkey": 5}, id="int"),
        pytest.param({"pubkey": key_pair("@x").pubkey, "extra": 1}, id="extra-field"),
    ],
)
def test_key_add_rejects_payload(chain: Chain, payload: dict[str, Any]) -> None:
    expect_rejected(chain, "invalid_payload", "@alice", "ACCOUNT_KEY_ADD", payload)


def test_key_add_not_by_session_key(chain: Chain) -> None:
    session = issue_session(chain, ["PROFILE_UPDATE"])
    expect_rejected(
        chain,
        "key_not_allowed",
        "@alice",
        "ACCOUNT_KEY_ADD",
        {"pubkey": key_pair("@x").pubkey},
        key=session,
    )


def test_key_revoke_removes_key(chain: Chain) -> None:
    new = key_pair("@alice-2")
    chain.ok("@alice", "ACCOUNT_KEY_ADD", {"pubkey": new.pubkey})
    chain.ok(
        "@alice", "ACCOUNT_KEY_REVOKE", {"pubkey": key_pair("@alice").pubkey}, key=new
    )
    assert chain.account("@alice")["keys"] == [new.pubkey]


def test_key_revoke_revoked_key_cannot_sign(chain: Chain) -> None:
    new = key_pair("@alice-2")
    chain.ok("@alice", "ACCOUNT_KEY_ADD", {"pubkey": new.pubkey})
    chain.ok("@alice", "ACCOUNT_KEY_REVOKE", {"pubkey": new.pubkey})
    expect_rejected(
        chain, "key_not_allowed", "@alice", "PROFILE_UPDATE", {"bio": "x"}, key=new
    )


def test_key_revoke_last_key_rejected(chain: Chain) -> None:
    pubkey = key_pair("@alice").pubkey
    error = expect_rejected(
        chain, "invalid_payload", "@alice", "ACCOUNT_KEY_REVOKE", {"pubkey": pubkey}
    )
    assert "last active key" in error.message


def test_key_revoke_unknown_key(chain: Chain) -> None:
    pubkey = key_pair("@stranger").pubkey
    expect_rejected(
        chain, "not_found", "@alice", "ACCOUNT_KEY_REVOKE", {"pubkey": pubkey}
    )


def test_key_of_other_account_not_allowed(chain: Chain) -> None:
    expect_rejected(
        chain,
        "key_not_allowed",
        "@alice",
        "PROFILE_UPDATE",
        {"bio": "x"},
        key=key_pair("@bob"),
    )


# -- session keys ----------------------------------------------------------------------


def test_session_issue_records_key(chain: Chain) -> None:
    session = issue_session(chain, ["PROFILE_UPDATE", "CONTENT_REACTION_SET"])
    (record,) = chain.account("@alice")["session_keys"]
    assert record["pubkey"] == session.pubkey
    assert record["scope"] == ["CONTENT_REACTION_SET", "PROFILE_UPDATE"]


def test_session_key_signs_in_scope(chain: Chain) -> None:
    session = issue_session(chain, ["PROFILE_UPDATE"])
    assert chain.run("@alice", "PROFILE_UPDATE", {"bio": "via session"}, key=session)[
        "ok"
    ]


def test_session_key_rejected_out_of_scope(chain: Chain) -> None:
    session = issue_session(chain, ["PROFILE_UPDATE"])
    error = expect_rejected(
        chain,
        "key_not_allowed",
        "@alice",
        "CONTENT_POST_CREATE",
        {"body": "x"},
        key=session,
    )
    assert "scope" in error.message


def test_session_key_rejected_after_expiry(chain: Chain) -> None:
    session = issue_session(chain, ["PROFILE_UPDATE"], ttl_ms=5000)
    expires = chain.account("@alice")["session_keys"][0]["expires_at_ms"]
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"}, key=session)
    error = admission_error(chain, env, now_ms=expires)
    assert error.code == "key_not_allowed"
    assert error.details == {"expires_at_ms": expires}


def test_session_key_valid_just_before_expiry(chain: Chain) -> None:
    session = issue_session(chain, ["PROFILE_UPDATE"], ttl_ms=5000)
    expires = chain.account("@alice")["session_keys"][0]["expires_at_ms"]
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"}, key=session)
    chain.admit(env, now_ms=expires - 1)


def test_session_key_expiring_before_block(chain: Chain) -> None:
    # Admitted while valid, included in a block timestamped after the expiry.
    session = issue_session(chain, ["PROFILE_UPDATE"], ttl_ms=5000)
    expires = chain.account("@alice")["session_keys"][0]["expires_at_ms"]
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"}, key=session)
    chain.admit(env)
    nonce = chain.next_nonce("@alice")
    (receipt,) = chain.block(env, timestamp_ms=expires).receipts
    assert receipt["code"] == "key_not_allowed"
    assert chain.next_nonce("@alice") == nonce + 1


def test_session_key_cannot_issue_session_key(chain: Chain) -> None:
    session = issue_session(chain, ["PROFILE_UPDATE"])
    payload = {
        "pubkey": key_pair("@another").pubkey,
        "scope": ["PROFILE_UPDATE"],
        "expires_at_ms": chain.now_ms + 1000,
    }
    expect_rejected(
        chain,
        "key_not_allowed",
        "@alice",
        "ACCOUNT_SESSION_KEY_ISSUE",
        payload,
        key=session,
    )


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        pytest.param(["ACCOUNT_SESSION_KEY_ISSUE"], "account key", id="issue-in-scope"),
        pytest.param(["ACCOUNT_KEY_ADD"], "account key", id="key-add-in-scope"),
        pytest.param(["ACCOUNT_REGISTER"], "account key", id="register-in-scope"),
        pytest.param(["NOPE"], "unknown tx type", id="unknown-type"),
        pytest.param(["PROFILE_UPDATE", "PROFILE_UPDATE"], "twice", id="duplicate"),
        pytest.param([], "non-empty", id="empty"),
        pytest.param("PROFILE_UPDATE", "non-empty list", id="not-a-list"),
    ],
)
def test_session_issue_rejects_scope(chain: Chain, scope: Any, message: str) -> None:
    payload = {
        "pubkey": key_pair("@s").pubkey,
        "scope": scope,
        "expires_at_ms": chain.now_ms + 1000,
    }
    error = expect_rejected(
        chain, "invalid_payload", "@alice", "ACCOUNT_SESSION_KEY_ISSUE", payload
    )
    assert message in error.message


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        pytest.param(0, "in the past", id="now"),
        pytest.param(-1, "in the past", id="past"),
        pytest.param(
            GENESIS_DEFAULTS["session_max_ttl_ms"] + 1,
            "session_max_ttl_ms",
            id="too-far",
        ),
    ],
)
def test_session_issue_rejects_expiry(chain: Chain, offset: int, message: str) -> None:
    payload = {
        "pubkey": key_pair("@s").pubkey,
        "scope": ["PROFILE_UPDATE"],
        "expires_at_ms": chain.now_ms + offset,
    }
    error = expect_rejected(
        chain, "invalid_payload", "@alice", "ACCOUNT_SESSION_KEY_ISSUE", payload
    )
    assert message in error.message


def test_session_issue_accepts_max_ttl(chain: Chain) -> None:
    issue_session(
        chain, ["PROFILE_UPDATE"], ttl_ms=GENESIS_DEFAULTS["session_max_ttl_ms"]
    )
    assert len(chain.account("@alice")["session_keys"]) == 1


def test_session_issue_rejects_account_key(chain: Chain) -> None:
    payload = {
        "pubkey": key_pair("@alice").pubkey,
        "scope": ["PROFILE_UPDATE"],
        "expires_at_ms": chain.now_ms + 1000,
    }
    expect_rejected(chain, "conflict", "@alice", "ACCOUNT_SESSION_KEY_ISSUE", payload)


def test_session_issue_limit_drops_expired() -> None:
    chain = Chain(params={"max_session_keys": 2})
    # Blocks are 1 s apart: @s1 is live in the third block and expired by the fifth.
    issue_session(chain, ["PROFILE_UPDATE"], name="@s1", ttl_ms=2500)
    issue_session(chain, ["PROFILE_UPDATE"], name="@s2", ttl_ms=60_000)
    payload = {
        "pubkey": key_pair("@s3").pubkey,
        "scope": ["PROFILE_UPDATE"],
        "expires_at_ms": chain.now_ms + 60_000,
    }
    expect_rejected(
        chain, "invalid_payload", "@alice", "ACCOUNT_SESSION_KEY_ISSUE", payload
    )
    chain.block()
    issue_session(chain, ["PROFILE_UPDATE"], name="@s3")
    pubkeys = [s["pubkey"] for s in chain.account("@alice")["session_keys"]]
    assert pubkeys == [key_pair("@s2").pubkey, key_pair("@s3").pubkey]


def test_session_revoke_removes_key(chain: Chain) -> None:
    session = issue_session(chain, ["PROFILE_UPDATE"])
    chain.ok("@alice", "ACCOUNT_SESSION_KEY_REVOKE", {"pubkey": session.pubkey})
    assert chain.account("@alice")["session_keys"] == []


def test_session_revoked_key_cannot_sign(chain: Chain) -> None:
    session = issue_session(chain, ["PROFILE_UPDATE"])
    chain.ok("@alice", "ACCOUNT_SESSION_KEY_REVOKE", {"pubkey": session.pubkey})
    expect_rejected(
        chain, "key_not_allowed", "@alice", "PROFILE_UPDATE", {"bio": "x"}, key=session
    )


def test_session_key_revokes_itself(chain: Chain) -> None:
    session = issue_session(chain, ["ACCOUNT_SESSION_KEY_REVOKE"])
    chain.ok(
        "@alice", "ACCOUNT_SESSION_KEY_REVOKE", {"pubkey": session.pubkey}, key=session
    )
    assert chain.account("@alice")["session_keys"] == []


def test_session_revoke_unknown_key(chain: Chain) -> None:
    pubkey = key_pair("@never").pubkey
    expect_rejected(
        chain, "not_found", "@alice", "ACCOUNT_SESSION_KEY_REVOKE", {"pubkey": pubkey}
    )


def test_session_revoke_account_key_is_not_found(chain: Chain) -> None:
    pubkey = key_pair("@alice").pubkey
    expect_rejected(
        chain, "not_found", "@alice", "ACCOUNT_SESSION_KEY_REVOKE", {"pubkey": pubkey}
    )


# -- revoked keys never come back ------------------------------------------------------


def session_payload(chain: Chain, pubkey: str) -> dict[str, Any]:
    return {
        "pubkey": pubkey,
        "scope": ["PROFILE_UPDATE"],
        "expires_at_ms": chain.now_ms + 60_000,
    }


def test_revoked_session_key_cannot_be_reissued(chain: Chain) -> None:
    session = issue_session(chain, ["PROFILE_UPDATE"])
    chain.ok("@alice", "ACCOUNT_SESSION_KEY_REVOKE", {"pubkey": session.pubkey})
    revoked_at = chain.height
    error = expect_rejected(
        chain,
        "key_revoked",
        "@alice",
        "ACCOUNT_SESSION_KEY_ISSUE",
        session_payload(chain, session.pubkey),
    )
    assert error.details == {"pubkey": session.pubkey, "revoked_height": revoked_at}
    assert error.http_status == 409
    assert chain.account("@alice")["session_keys"] == []
    expect_rejected(
        chain, "key_not_allowed", "@alice", "PROFILE_UPDATE", {"bio": "x"}, key=session
    )


def test_revoked_session_key_cannot_become_account_key(chain: Chain) -> None:
    session = issue_session(chain, ["PROFILE_UPDATE"])
    chain.ok("@alice", "ACCOUNT_SESSION_KEY_REVOKE", {"pubkey": session.pubkey})
    expect_rejected(
        chain, "key_revoked", "@alice", "ACCOUNT_KEY_ADD", {"pubkey": session.pubkey}
    )
    assert session.pubkey not in chain.account("@alice")["keys"]


def test_revoked_account_key_cannot_be_added_again(chain: Chain) -> None:
    new = key_pair("@alice-2")
    chain.ok("@alice", "ACCOUNT_KEY_ADD", {"pubkey": new.pubkey})
    chain.ok("@alice", "ACCOUNT_KEY_REVOKE", {"pubkey": new.pubkey})
    revoked_at = chain.height
    assert chain.get("key_revoked", f"@alice/{new.pubkey}") == {"height": revoked_at}
    error = expect_rejected(
        chain, "key_revoked", "@alice", "ACCOUNT_KEY_ADD", {"pubkey": new.pubkey}
    )
    assert error.details == {"pubkey": new.pubkey, "revoked_height": revoked_at}
    expect_rejected(
        chain,
        "key_revoked",
        "@alice",
        "ACCOUNT_SESSION_KEY_ISSUE",
        session_payload(chain, new.pubkey),
    )
    expect_rejected(
        chain, "key_not_allowed", "@alice", "PROFILE_UPDATE", {"bio": "x"}, key=new
    )


def test_revoked_key_of_another_account_may_be_added(chain: Chain) -> None:
    # Revocation is per account: @bob never revoked the key that @alice did.
    session = issue_session(chain, ["PROFILE_UPDATE"])
    chain.ok("@alice", "ACCOUNT_SESSION_KEY_REVOKE", {"pubkey": session.pubkey})
    issue_session(chain, ["PROFILE_UPDATE"], signer="@bob")
    pubkeys = [s["pubkey"] for s in chain.account("@bob")["session_keys"]]
    assert pubkeys == [session.pubkey]


def test_reissue_in_revoke_block_fails_in_block(chain: Chain) -> None:
    # Admitted before the revocation commits, both land in one block: the
    # re-issue is rejected there, after the revocation.
    session = issue_session(chain, ["PROFILE_UPDATE"])
    revoke = chain.tx(
        "@alice", "ACCOUNT_SESSION_KEY_REVOKE", {"pubkey": session.pubkey}
    )
    reissue = chain.tx(
        "@alice",
        "ACCOUNT_SESSION_KEY_ISSUE",
        session_payload(chain, session.pubkey),
        nonce=revoke.nonce + 1,
    )
    receipts = chain.block(revoke, reissue).receipts
    assert receipts[0] == {"ok": True}
    assert receipts[1]["code"] == "key_revoked"
    assert chain.account("@alice")["session_keys"] == []


def test_expired_session_keys_kept_bounded() -> None:
    chain = Chain(params={"max_session_keys": 2})
    for index in range(4):
        issue_session(chain, ["PROFILE_UPDATE"], name=f"@old{index}", ttl_ms=1500)
        chain.block()
    issue_session(chain, ["PROFILE_UPDATE"], name="@fresh")
    account = chain.account("@alice")
    assert [s["pubkey"] for s in account["session_keys"]] == [key_pair("@fresh").pubkey]
    # Only the two most recent expired keys are remembered.
    assert [e["pubkey"] for e in account["expired_session_keys"]] == [
        key_pair("@old2").pubkey,
        key_pair("@old3").pubkey,
    ]
    assert all(
        e["expires_at_ms"] < chain.now_ms for e in account["expired_session_keys"]
    )


def test_expired_session_key_reports_expiry() -> None:
    chain = Chain()
    old = issue_session(chain, ["PROFILE_UPDATE"], name="@old", ttl_ms=1500)
    expires = chain.account("@alice")["session_keys"][0]["expires_at_ms"]
    chain.block()
    issue_session(chain, ["PROFILE_UPDATE"], name="@new")
    assert chain.account("@alice")["expired_session_keys"] == [
        {"pubkey": old.pubkey, "expires_at_ms": expires}
    ]
    error = expect_rejected(
        chain, "key_not_allowed", "@alice", "PROFILE_UPDATE", {"bio": "x"}, key=old
    )
    assert error.details == {"expires_at_ms": expires}


def test_expired_session_key_reissued_and_revoked() -> None:
    chain = Chain()
    old = issue_session(chain, ["PROFILE_UPDATE"], name="@old", ttl_ms=1500)
    chain.block()
    issue_session(chain, ["PROFILE_UPDATE"], name="@new")
    # An expired key may be issued again, and then leaves the expired list.
    issue_session(chain, ["PROFILE_UPDATE"], name="@old")
    account = chain.account("@alice")
    assert account["expired_session_keys"] == []
    assert old.pubkey in [s["pubkey"] for s in account["session_keys"]]
    # Revoking a key that only the expired list remembers also bars it for good.
    other = issue_session(chain, ["PROFILE_UPDATE"], name="@other", ttl_ms=1500)
    chain.block()
    issue_session(chain, ["PROFILE_UPDATE"], name="@third")
    assert [e["pubkey"] for e in chain.account("@alice")["expired_session_keys"]] == [
        other.pubkey
    ]
    chain.ok("@alice", "ACCOUNT_SESSION_KEY_REVOKE", {"pubkey": other.pubkey})
    assert chain.account("@alice")["expired_session_keys"] == []
    expect_rejected(
        chain,
        "key_revoked",
        "@alice",
        "ACCOUNT_SESSION_KEY_ISSUE",
        session_payload(chain, other.pubkey),
    )


# -- PROFILE_UPDATE --------------------------------------------------------------------


def test_profile_update_sets_fields(chain: Chain) -> None:
    chain.ok(
        "@dave",
        "PROFILE_UPDATE",
        {"display_name": "Dave", "bio": "hi", "avatar_cid": CID},
    )
    assert chain.account("@dave")["profile"] == {
        "display_name": "Dave",
        "bio": "hi",
        "avatar_cid": CID,
    }


def test_profile_update_keeps_other_fields(chain: Chain) -> None:
    chain.ok("@dave", "PROFILE_UPDATE", {"display_name": "Dave", "bio": "hi"})
    chain.ok("@dave", "PROFILE_UPDATE", {"bio": "bye"})
    assert chain.account("@dave")["profile"] == {"display_name": "Dave", "bio": "bye"}


def test_profile_update_clears_avatar(chain: Chain) -> None:
    chain.ok("@dave", "PROFILE_UPDATE", {"avatar_cid": CID})
    chain.ok("@dave", "PROFILE_UPDATE", {"avatar_cid": None})
    assert chain.account("@dave")["profile"]["avatar_cid"] is None


def test_profile_update_accepts_max_lengths(chain: Chain) -> None:
    payload = {"display_name": "é" * 64, "bio": "b" * 500}
    assert chain.run("@dave", "PROFILE_UPDATE", payload)["ok"]


def test_profile_update_accepts_empty_bio(chain: Chain) -> None:
    assert chain.run("@dave", "PROFILE_UPDATE", {"bio": ""})["ok"]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"display_name": "d" * 65}, id="name-65"),
        pytest.param({"bio": "b" * 501}, id="bio-501"),
        pytest.param({"display_name": ""}, id="name-empty"),
        pytest.param({"display_name": "   "}, id="name-blank"),
        pytest.param({"display_name": "a\x00b"}, id="name-control"),
        pytest.param({"bio": "a\rb"}, id="bio-carriage-return"),
        pytest.param({"display_name": 5}, id="name-int"),
        pytest.param({"avatar_cid": "Qm123"}, id="avatar-cidv0"),
        pytest.param({"avatar_cid": 1}, id="avatar-int"),
        pytest.param({"website": "x"}, id="unknown-field"),
        pytest.param({}, id="empty"),
    ],
)
def test_profile_update_rejects(chain: Chain, payload: dict[str, Any]) -> None:
    expect_rejected(chain, "invalid_payload", "@dave", "PROFILE_UPDATE", payload)


def test_profile_update_names_max_chars(chain: Chain) -> None:
    error = expect_rejected(
        chain, "invalid_payload", "@dave", "PROFILE_UPDATE", {"bio": "b" * 501}
    )
    assert error.details == {"max_chars": 500}


# -- FOLLOW_SET ------------------------------------------------------------------------


def test_follow_sets_counts(chain: Chain) -> None:
    chain.ok("@carol", "FOLLOW_SET", {"target": "@alice", "following": True})
    assert chain.account("@carol")["counts"]["following"] == 1
    assert chain.account("@alice")["counts"]["followers"] == 1
    assert chain.get("follow", "@carol/@alice") is not None


def test_follow_twice_counts_once(chain: Chain) -> None:
    chain.ok("@carol", "FOLLOW_SET", {"target": "@alice", "following": True})
    chain.ok("@carol", "FOLLOW_SET", {"target": "@alice", "following": True})
    assert chain.account("@carol")["counts"]["following"] == 1
    assert chain.account("@alice")["counts"]["followers"] == 1


def test_follow_unfollow_restores_counts(chain: Chain) -> None:
    chain.ok("@carol", "FOLLOW_SET", {"target": "@alice", "following": True})
    chain.ok("@carol", "FOLLOW_SET", {"target": "@alice", "following": False})
    assert chain.account("@carol")["counts"]["following"] == 0
    assert chain.account("@alice")["counts"]["followers"] == 0
    assert chain.get("follow", "@carol/@alice") is None


def test_follow_unfollow_without_follow(chain: Chain) -> None:
    chain.ok("@carol", "FOLLOW_SET", {"target": "@alice", "following": False})
    assert chain.account("@alice")["counts"]["followers"] == 0


def test_follow_counts_several_followers(chain: Chain) -> None:
    for follower in ("@carol", "@bob", "@founder"):
        chain.ok(follower, "FOLLOW_SET", {"target": "@alice", "following": True})
    chain.ok("@alice", "FOLLOW_SET", {"target": "@bob", "following": True})
    assert chain.account("@alice")["counts"]["followers"] == 3
    assert chain.account("@alice")["counts"]["following"] == 1
    assert chain.account("@bob")["counts"]["followers"] == 1


def test_follow_needs_tier_1(chain: Chain) -> None:
    error = expect_rejected(
        chain,
        "tier_required",
        "@dave",
        "FOLLOW_SET",
        {"target": "@alice", "following": True},
    )
    assert error.details == {"required_tier": 1, "tier": 0}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param(
            {"target": "@carol", "following": True}, "invalid_payload", id="self"
        ),
        pytest.param(
            {"target": "@ghost", "following": True}, "not_found", id="unknown"
        ),
        pytest.param(
            {"target": "carol", "following": True}, "invalid_payload", id="bad-id"
        ),
        pytest.param(
            {"target": "@alice", "following": 1}, "invalid_payload", id="not-bool"
        ),
        pytest.param({"target": "@alice"}, "invalid_payload", id="missing"),
    ],
)
def test_follow_rejects(chain: Chain, payload: dict[str, Any], code: str) -> None:
    expect_rejected(chain, code, "@carol", "FOLLOW_SET", payload)


# -- CONTENT_POST_CREATE ---------------------------------------------------------------


def test_post_create_returns_tx_id(chain: Chain) -> None:
    env = chain.tx("@alice", "CONTENT_POST_CREATE", {"body": "hello"})
    chain.admit(env)
    (receipt,) = chain.block(env).receipts
    assert receipt == {"ok": True, "post_id": env.tx_id}


def test_post_create_record(chain: Chain) -> None:
    post_id = post(chain, body="hello world")
    record = chain.get("post", post_id)
    assert record["author"] == "@alice"
    assert record["body"] == "hello world"
    assert record["height"] == 1
    assert record["timestamp_ms"] == chain.head["timestamp_ms"]
    assert record["deleted"] is False


def test_post_create_indexes(chain: Chain) -> None:
    post_id = post(chain)
    key = f"{1:012d}.{post_id}"
    assert chain.get("feed", key) == {"post_id": post_id}
    assert chain.get("account_post", f"@alice/{key}") == {"post_id": post_id}


def test_post_create_counts(chain: Chain) -> None:
    post(chain)
    post(chain)
    assert chain.account("@alice")["counts"]["posts"] == 2
    assert chain.get("counter", "posts") == {"n": 2}


def test_post_create_accepts_max_body(chain: Chain) -> None:
    assert chain.run("@alice", "CONTENT_POST_CREATE", {"body": "x" * 5000})["ok"]


def test_post_create_with_media(chain: Chain) -> None:
    # Media needs a pin request, so this entry replaces a committed IPFS_PIN_REQUEST.
    chain.state.entries[("media", CID)] = {"cid": CID}
    post_id = chain.ok(
        "@alice", "CONTENT_POST_CREATE", {"body": "pic", "media": [CID]}
    )["post_id"]
    assert chain.get("post", post_id)["media"] == [CID]


def test_post_create_needs_tier_2(chain: Chain) -> None:
    error = expect_rejected(
        chain, "tier_required", "@carol", "CONTENT_POST_CREATE", {"body": "x"}
    )
    assert error.details == {"required_tier": 2, "tier": 1}


def test_post_create_gate_override() -> None:
    chain = Chain(params={"gates": {"CONTENT_POST_CREATE": 0}})
    assert chain.run("@dave", "CONTENT_POST_CREATE", {"body": "tier 0 post"})["ok"]


def test_gate_override_raises_tier() -> None:
    chain = Chain(params={"gates": {"PROFILE_UPDATE": 2}})
    expect_rejected(chain, "tier_required", "@carol", "PROFILE_UPDATE", {"bio": "x"})


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param({"body": "x" * 5001}, "invalid_payload", id="body-5001"),
        pytest.param({"body": ""}, "invalid_payload", id="body-empty"),
        pytest.param({"body": " \n"}, "invalid_payload", id="body-blank"),
        pytest.param({}, "invalid_payload", id="body-missing"),
        pytest.param(
            {"body": "x", "media": [CID]}, "invalid_payload", id="media-not-pinned"
        ),
        pytest.param(
            {"body": "x", "media": ["nope"]}, "invalid_payload", id="media-bad-cid"
        ),
        pytest.param(
            {"body": "x", "media": CID}, "invalid_payload", id="media-not-list"
        ),
        pytest.param(
            {"body": "x", "group_id": "nogroup"}, "not_found", id="group-unknown"
        ),
        pytest.param(
            {"body": "x", "title": "t"}, "invalid_payload", id="unknown-field"
        ),
    ],
)
def test_post_create_rejects(chain: Chain, payload: dict[str, Any], code: str) -> None:
    expect_rejected(chain, code, "@alice", "CONTENT_POST_CREATE", payload)


def test_post_create_rejects_duplicate_media(chain: Chain) -> None:
    chain.state.entries[("media", CID)] = {"cid": CID}
    payload = {"body": "x", "media": [CID, CID]}
    expect_rejected(chain, "invalid_payload", "@alice", "CONTENT_POST_CREATE", payload)


def test_post_create_rejects_17_media(chain: Chain) -> None:
    payload = {"body": "x", "media": [CID] * 17}
    expect_rejected(chain, "invalid_payload", "@alice", "CONTENT_POST_CREATE", payload)


# -- CONTENT_POST_EDIT / CONTENT_POST_DELETE ---------------------------------------------


def test_post_edit_changes_body(chain: Chain) -> None:
    post_id = post(chain)
    chain.ok("@alice", "CONTENT_POST_EDIT", {"post_id": post_id, "body": "edited"})
    record = chain.get("post", post_id)
    assert record["body"] == "edited"
    assert record["edited_at_ms"] == chain.head["timestamp_ms"]


def test_post_edit_author_only(chain: Chain) -> None:
    post_id = post(chain)
    payload = {"post_id": post_id, "body": "mine now"}
    expect_rejected(chain, "forbidden", "@bob", "CONTENT_POST_EDIT", payload)


def test_post_edit_not_after_deletion(chain: Chain) -> None:
    post_id = post(chain)
    chain.ok("@alice", "CONTENT_POST_DELETE", {"post_id": post_id})
    payload = {"post_id": post_id, "body": "back"}
    expect_rejected(chain, "conflict", "@alice", "CONTENT_POST_EDIT", payload)


def test_post_edit_unknown_post(chain: Chain) -> None:
    payload = {"post_id": "b" + "a" * 52, "body": "x"}
    expect_rejected(chain, "not_found", "@alice", "CONTENT_POST_EDIT", payload)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"post_id": "post1", "body": "x"}, id="bad-id"),
        pytest.param({"post_id": "b" + "a" * 52, "body": ""}, id="empty-body"),
        pytest.param({"post_id": "b" + "a" * 52}, id="missing-body"),
    ],
)
def test_post_edit_rejects_payload(chain: Chain, payload: dict[str, Any]) -> None:
    expect_rejected(chain, "invalid_payload", "@alice", "CONTENT_POST_EDIT", payload)


def test_post_delete_leaves_tombstone(chain: Chain) -> None:
    post_id = post(chain, body="secret")
    chain.ok("@alice", "CONTENT_POST_DELETE", {"post_id": post_id})
    record = chain.get("post", post_id)
    assert record["deleted"] is True
    assert record["body"] == ""
    assert record["media"] == []
    assert record["deleted_at_ms"] == chain.head["timestamp_ms"]
    assert record["author"] == "@alice"
    assert record["id"] == post_id
    assert record["height"] == 1


def test_post_delete_keeps_feed_entry(chain: Chain) -> None:
    post_id = post(chain)
    chain.ok("@alice", "CONTENT_POST_DELETE", {"post_id": post_id})
    assert chain.get("feed", f"{1:012d}.{post_id}") == {"post_id": post_id}


def test_post_delete_author_only(chain: Chain) -> None:
    post_id = post(chain)
    expect_rejected(
        chain, "forbidden", "@bob", "CONTENT_POST_DELETE", {"post_id": post_id}
    )


def test_post_delete_twice(chain: Chain) -> None:
    post_id = post(chain)
    chain.ok("@alice", "CONTENT_POST_DELETE", {"post_id": post_id})
    expect_rejected(
        chain, "conflict", "@alice", "CONTENT_POST_DELETE", {"post_id": post_id}
    )


def test_post_delete_unknown(chain: Chain) -> None:
    payload = {"post_id": "b" + "q" * 52}
    expect_rejected(chain, "not_found", "@alice", "CONTENT_POST_DELETE", payload)


# -- CONTENT_COMMENT_CREATE / CONTENT_COMMENT_DELETE ---------------------------------------


def test_comment_on_post(chain: Chain) -> None:
    post_id = post(chain)
    comment_id = comment(chain, post_id)
    record = chain.get("comment", comment_id)
    assert record["post_id"] == post_id
    assert record["parent_id"] == post_id
    assert record["author"] == "@bob"
    assert chain.get("post", post_id)["comment_count"] == 1
    assert chain.get("comment_index", f"{post_id}/{2:012d}.{comment_id}") == {
        "comment_id": comment_id
    }


def test_comment_on_comment(chain: Chain) -> None:
    post_id = post(chain)
    first = comment(chain, post_id)
    reply = comment(chain, first, author="@alice")
    record = chain.get("comment", reply)
    assert record["parent_id"] == first
    assert record["post_id"] == post_id
    assert chain.get("post", post_id)["comment_count"] == 2


def test_comment_counts(chain: Chain) -> None:
    post_id = post(chain)
    comment(chain, post_id)
    assert chain.account("@bob")["counts"]["comments"] == 1
    assert chain.get("counter", "comments") == {"n": 1}


def test_comment_on_deleted_post(chain: Chain) -> None:
    post_id = post(chain)
    chain.ok("@alice", "CONTENT_POST_DELETE", {"post_id": post_id})
    payload = {"parent_id": post_id, "body": "late"}
    expect_rejected(chain, "conflict", "@bob", "CONTENT_COMMENT_CREATE", payload)


def test_comment_on_deleted_comment(chain: Chain) -> None:
    post_id = post(chain)
    first = comment(chain, post_id)
    chain.ok("@bob", "CONTENT_COMMENT_DELETE", {"comment_id": first})
    payload = {"parent_id": first, "body": "late"}
    expect_rejected(chain, "conflict", "@alice", "CONTENT_COMMENT_CREATE", payload)


def test_comment_under_deleted_post(chain: Chain) -> None:
    post_id = post(chain)
    first = comment(chain, post_id)
    chain.ok("@alice", "CONTENT_POST_DELETE", {"post_id": post_id})
    payload = {"parent_id": first, "body": "late"}
    expect_rejected(chain, "conflict", "@alice", "CONTENT_COMMENT_CREATE", payload)


def test_comment_on_hidden_post(chain: Chain) -> None:
    post_id = post(chain)
    # An upheld dispute hides a post. Setting the field directly replaces that dispute.
    record = chain.get("post", post_id)
    chain.state.entries[("post", post_id)] = {**record, "hidden": True}
    payload = {"parent_id": post_id, "body": "x"}
    expect_rejected(chain, "conflict", "@bob", "CONTENT_COMMENT_CREATE", payload)


def test_comment_on_unknown_parent(chain: Chain) -> None:
    payload = {"parent_id": "b" + "a" * 52, "body": "x"}
    expect_rejected(chain, "not_found", "@bob", "CONTENT_COMMENT_CREATE", payload)


def test_comment_body_limit(chain: Chain) -> None:
    post_id = post(chain)
    payload = {"parent_id": post_id, "body": "c" * 2001}
    expect_rejected(chain, "invalid_payload", "@bob", "CONTENT_COMMENT_CREATE", payload)


def test_comment_needs_tier_2(chain: Chain) -> None:
    post_id = post(chain)
    payload = {"parent_id": post_id, "body": "x"}
    expect_rejected(chain, "tier_required", "@carol", "CONTENT_COMMENT_CREATE", payload)


def test_comment_delete_tombstone(chain: Chain) -> None:
    post_id = post(chain)
    comment_id = comment(chain, post_id)
    chain.ok("@bob", "CONTENT_COMMENT_DELETE", {"comment_id": comment_id})
    record = chain.get("comment", comment_id)
    assert record["deleted"] is True
    assert record["body"] == ""
    assert record["deleted_at_ms"] == chain.head["timestamp_ms"]


def test_comment_delete_author_only(chain: Chain) -> None:
    comment_id = comment(chain, post(chain))
    payload = {"comment_id": comment_id}
    expect_rejected(chain, "forbidden", "@alice", "CONTENT_COMMENT_DELETE", payload)


def test_comment_delete_twice(chain: Chain) -> None:
    comment_id = comment(chain, post(chain))
    chain.ok("@bob", "CONTENT_COMMENT_DELETE", {"comment_id": comment_id})
    payload = {"comment_id": comment_id}
    expect_rejected(chain, "conflict", "@bob", "CONTENT_COMMENT_DELETE", payload)


def test_comment_delete_unknown(chain: Chain) -> None:
    payload = {"comment_id": "b" + "a" * 52}
    expect_rejected(chain, "not_found", "@bob", "CONTENT_COMMENT_DELETE", payload)


# -- CONTENT_REACTION_SET ------------------------------------------------------------------


def react(
    chain: Chain, target_id: str, reaction: str | None, signer: str = "@bob"
) -> None:
    chain.ok(
        signer, "CONTENT_REACTION_SET", {"target_id": target_id, "reaction": reaction}
    )


def test_reaction_set(chain: Chain) -> None:
    post_id = post(chain)
    react(chain, post_id, "like")
    assert chain.get("post", post_id)["reactions"] == {"like": 1}
    assert chain.get("reaction", f"{post_id}/@bob")["reaction"] == "like"


def test_reaction_change_moves_count(chain: Chain) -> None:
    post_id = post(chain)
    react(chain, post_id, "like")
    react(chain, post_id, "love")
    assert chain.get("post", post_id)["reactions"] == {"love": 1}


def test_reaction_clear(chain: Chain) -> None:
    post_id = post(chain)
    react(chain, post_id, "like")
    react(chain, post_id, None)
    assert chain.get("post", post_id)["reactions"] == {}
    assert chain.get("reaction", f"{post_id}/@bob") is None


def test_reaction_clear_without_reaction(chain: Chain) -> None:
    post_id = post(chain)
    react(chain, post_id, None)
    assert chain.get("post", post_id)["reactions"] == {}


def test_reaction_same_twice_counts_once(chain: Chain) -> None:
    post_id = post(chain)
    react(chain, post_id, "like")
    react(chain, post_id, "like")
    assert chain.get("post", post_id)["reactions"] == {"like": 1}


def test_reaction_counts_accounts(chain: Chain) -> None:
    post_id = post(chain)
    react(chain, post_id, "like", "@bob")
    react(chain, post_id, "like", "@alice")
    react(chain, post_id, "sad", "@founder")
    assert chain.get("post", post_id)["reactions"] == {"like": 2, "sad": 1}


def test_reaction_on_comment(chain: Chain) -> None:
    comment_id = comment(chain, post(chain))
    react(chain, comment_id, "laugh", "@alice")
    assert chain.get("comment", comment_id)["reactions"] == {"laugh": 1}


@pytest.mark.parametrize("reaction", ["meh", "LIKE", 1, ""])
def test_reaction_rejects_unknown(chain: Chain, reaction: Any) -> None:
    payload = {"target_id": post(chain), "reaction": reaction}
    expect_rejected(chain, "invalid_payload", "@bob", "CONTENT_REACTION_SET", payload)


def test_reaction_on_deleted_post(chain: Chain) -> None:
    post_id = post(chain)
    chain.ok("@alice", "CONTENT_POST_DELETE", {"post_id": post_id})
    payload = {"target_id": post_id, "reaction": "like"}
    expect_rejected(chain, "conflict", "@bob", "CONTENT_REACTION_SET", payload)


def test_reaction_on_unknown_target(chain: Chain) -> None:
    payload = {"target_id": "b" + "a" * 52, "reaction": "like"}
    expect_rejected(chain, "not_found", "@bob", "CONTENT_REACTION_SET", payload)


# -- CONTENT_FLAG ------------------------------------------------------------------------


def test_flag_records(chain: Chain) -> None:
    post_id = post(chain)
    chain.ok("@bob", "CONTENT_FLAG", {"target_id": post_id, "reason": "spam"})
    assert chain.get("flag", f"{post_id}/@bob")["reason"] == "spam"
    assert chain.get("post", post_id)["flag_count"] == 1


def test_flag_once_per_account(chain: Chain) -> None:
    post_id = post(chain)
    chain.ok("@bob", "CONTENT_FLAG", {"target_id": post_id, "reason": "spam"})
    payload = {"target_id": post_id, "reason": "still spam"}
    expect_rejected(chain, "conflict", "@bob", "CONTENT_FLAG", payload)
    assert chain.get("post", post_id)["flag_count"] == 1


def test_flag_by_two_accounts(chain: Chain) -> None:
    post_id = post(chain)
    chain.ok("@bob", "CONTENT_FLAG", {"target_id": post_id, "reason": "spam"})
    chain.ok("@founder", "CONTENT_FLAG", {"target_id": post_id, "reason": "spam"})
    assert chain.get("post", post_id)["flag_count"] == 2


def test_flag_comment(chain: Chain) -> None:
    comment_id = comment(chain, post(chain))
    chain.ok("@alice", "CONTENT_FLAG", {"target_id": comment_id, "reason": "rude"})
    assert chain.get("comment", comment_id)["flag_count"] == 1


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        pytest.param("", "invalid_payload", id="empty"),
        pytest.param("r" * 501, "invalid_payload", id="too-long"),
        pytest.param(None, "invalid_payload", id="null"),
    ],
)
def test_flag_rejects_reason(chain: Chain, reason: Any, code: str) -> None:
    payload = {"target_id": post(chain), "reason": reason}
    expect_rejected(chain, code, "@bob", "CONTENT_FLAG", payload)


def test_flag_unknown_target(chain: Chain) -> None:
    payload = {"target_id": "b" + "a" * 52, "reason": "spam"}
    expect_rejected(chain, "not_found", "@bob", "CONTENT_FLAG", payload)


# -- nonces ------------------------------------------------------------------------------


def test_nonce_window_is_64() -> None:
    assert NONCE_WINDOW == 64


@pytest.mark.parametrize("offset", [0, 1, 63])
def test_nonce_window_admits(chain: Chain, offset: int) -> None:
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"}, nonce=1 + offset)
    chain.admit(env)


def test_nonce_too_high(chain: Chain) -> None:
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"}, nonce=1 + 64)
    error = admission_error(chain, env)
    assert error.code == "nonce_too_high"
    assert error.details == {"next_nonce": 1}


def test_nonce_too_low(chain: Chain) -> None:
    chain.ok("@alice", "PROFILE_UPDATE", {"bio": "x"})
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "y"}, nonce=1)
    error = admission_error(chain, env)
    assert error.code == "nonce_too_low"
    assert error.details == {"next_nonce": 2}


def test_nonce_zero_too_low_for_existing_account(chain: Chain) -> None:
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"}, nonce=0)
    assert admission_error(chain, env).code == "nonce_too_low"


def test_nonce_window_moves(chain: Chain) -> None:
    chain.ok("@alice", "PROFILE_UPDATE", {"bio": "x"})
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"}, nonce=2 + 63)
    chain.admit(env)


def test_nonces_in_order_in_one_block(chain: Chain) -> None:
    envs = [
        chain.tx("@alice", "PROFILE_UPDATE", {"bio": str(n)}, nonce=n)
        for n in (1, 2, 3)
    ]
    for env in envs:
        chain.admit(env)
    receipts = chain.block(*envs).receipts
    assert [r["ok"] for r in receipts] == [True, True, True]
    assert chain.next_nonce("@alice") == 4
    assert chain.account("@alice")["profile"]["bio"] == "3"


def test_nonce_gap_in_block_not_consumed(chain: Chain) -> None:
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"}, nonce=3)
    (receipt,) = chain.block(env).receipts
    assert receipt["code"] == "nonce_too_high"
    assert chain.next_nonce("@alice") == 1


def test_nonce_replay_in_later_block(chain: Chain) -> None:
    env = chain.tx("@alice", "PROFILE_UPDATE", {"bio": "x"})
    chain.admit(env)
    chain.block(env)
    (receipt,) = chain.block(env).receipts
    assert receipt["code"] == "nonce_too_low"
    assert chain.next_nonce("@alice") == 2


# -- gates -------------------------------------------------------------------------------


def test_role_required(chain: Chain) -> None:
    payload = {"request_id": "b" + "a" * 52, "verdict": "approve"}
    error = expect_rejected(
        chain, "role_required", "@alice", "POH_REVIEW_SUBMIT", payload
    )
    assert error.details == {"required_role": "juror"}


def test_tier_checked_before_economics_lock(chain: Chain) -> None:
    payload = {"to": "@alice", "amount": 1}
    expect_rejected(chain, "tier_required", "@dave", "BALANCE_TRANSFER", payload)


# -- admitted, then failing in its block ----------------------------------------------------


def test_admitted_tx_fails_in_block(chain: Chain) -> None:
    post_id = post(chain)
    delete = chain.tx("@alice", "CONTENT_POST_DELETE", {"post_id": post_id}, nonce=2)
    edit = chain.tx(
        "@alice", "CONTENT_POST_EDIT", {"post_id": post_id, "body": "x"}, nonce=3
    )
    chain.admit(delete)
    chain.admit(edit)  # the post is not deleted yet in the committed state
    receipts = chain.block(delete, edit).receipts
    assert receipts[0] == {"ok": True}
    assert receipts[1]["ok"] is False
    assert receipts[1]["code"] == "conflict"
    assert chain.get("post", post_id)["body"] == ""


def test_failed_tx_consumes_nonce(chain: Chain) -> None:
    post_id = post(chain)
    delete = chain.tx("@alice", "CONTENT_POST_DELETE", {"post_id": post_id}, nonce=2)
    edit = chain.tx(
        "@alice", "CONTENT_POST_EDIT", {"post_id": post_id, "body": "x"}, nonce=3
    )
    chain.block(delete, edit)
    assert chain.next_nonce("@alice") == 4
    assert chain.run("@alice", "PROFILE_UPDATE", {"bio": "next"})["ok"]


def test_failed_tx_receipt_message(chain: Chain) -> None:
    env = chain.tx("@alice", "PROFILE_UPDATE", {})
    (receipt,) = chain.block(env).receipts
    assert receipt == {
        "ok": False,
        "code": "invalid_payload",
        "message": "payload sets no field",
    }


# -- economics lock ------------------------------------------------------------------------


def test_unlock_at_is_90_days(chain: Chain) -> None:
    assert chain.unlock_at_ms == chain.genesis_time_ms + 90 * DAY_MS


@pytest.mark.parametrize(
    ("signer", "tx_type", "payload"),
    [
        pytest.param(
            "@alice", "BALANCE_TRANSFER", {"to": "@bob", "amount": 1}, id="transfer"
        ),
        pytest.param(
            "@alice",
            "TREASURY_SPEND_PROPOSE",
            {"to": "@bob", "amount": 1, "memo": ""},
            id="treasury",
        ),
        pytest.param("@carol", "REWARD_CLAIM", {}, id="reward"),
    ],
)
def test_economics_locked(
    chain: Chain, signer: str, tx_type: str, payload: dict[str, Any]
) -> None:
    error = expect_rejected(chain, "economics_locked", signer, tx_type, payload)
    assert error.details == {"unlock_at_ms": chain.unlock_at_ms}


def test_economics_locked_receipt_details(chain: Chain) -> None:
    env = chain.tx("@alice", "BALANCE_TRANSFER", {"to": "@bob", "amount": 1})
    (receipt,) = chain.block(env).receipts
    assert receipt["code"] == "economics_locked"
    assert receipt["details"] == {"unlock_at_ms": chain.unlock_at_ms}


def test_economics_locked_until_last_ms(chain: Chain) -> None:
    env = chain.tx("@alice", "BALANCE_TRANSFER", {"to": "@bob", "amount": 1})
    assert (
        admission_error(chain, env, now_ms=chain.unlock_at_ms - 1).code
        == "economics_locked"
    )


def test_economics_unlocks_at_unlock_time(chain: Chain) -> None:
    env = chain.tx("@alice", "BALANCE_TRANSFER", {"to": "@bob", "amount": 1})
    chain.admit(env, now_ms=chain.unlock_at_ms)


def test_economics_block_uses_block_timestamp(chain: Chain) -> None:
    # Admitted against a clock past the unlock, included in an earlier-timestamped block.
    env = chain.tx("@alice", "BALANCE_TRANSFER", {"to": "@bob", "amount": 1})
    chain.admit(env, now_ms=chain.unlock_at_ms)
    (receipt,) = chain.block(env, timestamp_ms=chain.unlock_at_ms - 1).receipts
    assert receipt["code"] == "economics_locked"
    assert chain.account("@alice")["balance"] == 1000


def test_economics_applies_in_block_after_unlock(chain: Chain) -> None:
    env = chain.tx("@alice", "BALANCE_TRANSFER", {"to": "@bob", "amount": 1})
    (receipt,) = chain.block(env, timestamp_ms=chain.unlock_at_ms).receipts
    assert receipt == {"ok": True}


# -- BALANCE_TRANSFER / TREASURY_SPEND_PROPOSE / REWARD_CLAIM ---------------------------------


def test_transfer_moves_balance(unlocked: Chain) -> None:
    unlocked.ok("@alice", "BALANCE_TRANSFER", {"to": "@bob", "amount": 250})
    assert unlocked.account("@alice")["balance"] == 750
    assert unlocked.account("@bob")["balance"] == 250


def test_transfer_whole_balance(unlocked: Chain) -> None:
    unlocked.ok("@carol", "BALANCE_TRANSFER", {"to": "@dave", "amount": 100})
    assert unlocked.account("@carol")["balance"] == 0


def test_transfer_insufficient_balance(unlocked: Chain) -> None:
    error = expect_rejected(
        unlocked,
        "insufficient_balance",
        "@carol",
        "BALANCE_TRANSFER",
        {"to": "@dave", "amount": 101},
    )
    assert error.details == {"balance": 100}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param({"to": "@alice", "amount": 1}, "invalid_payload", id="self"),
        pytest.param({"to": "@ghost", "amount": 1}, "not_found", id="unknown"),
        pytest.param({"to": "@bob", "amount": 0}, "invalid_payload", id="zero"),
        pytest.param({"to": "@bob", "amount": -5}, "invalid_payload", id="negative"),
        pytest.param({"to": "@bob", "amount": True}, "invalid_payload", id="bool"),
        pytest.param({"to": "@bob"}, "invalid_payload", id="missing"),
    ],
)
def test_transfer_rejects(unlocked: Chain, payload: dict[str, Any], code: str) -> None:
    expect_rejected(unlocked, code, "@alice", "BALANCE_TRANSFER", payload)


def test_transfer_tier_1_allowed(unlocked: Chain) -> None:
    assert unlocked.run("@carol", "BALANCE_TRANSFER", {"to": "@alice", "amount": 1})[
        "ok"
    ]


def test_treasury_spend_opens_proposal(unlocked: Chain) -> None:
    payload = {"to": "@bob", "amount": 100, "memo": "servers"}
    env = unlocked.tx("@alice", "TREASURY_SPEND_PROPOSE", payload)
    unlocked.admit(env)
    (receipt,) = unlocked.block(env).receipts
    voting_blocks = GENESIS_DEFAULTS["treasury_voting_blocks"]
    assert receipt == {
        "ok": True,
        "proposal_id": env.tx_id,
        "close_height": unlocked.height + voting_blocks,
    }
    record = unlocked.get("gov_proposal", env.tx_id)
    assert record["status"] == "open"
    assert record["proposer"] == "@alice"
    assert record["body"] == "servers"
    assert record["voting_blocks"] == voting_blocks
    assert record["action"] == {
        "type": "treasury_spend",
        "from": "@treasury",
        "to": "@bob",
        "amount": 100,
    }


def test_treasury_proposal_moves_no_balance(unlocked: Chain) -> None:
    unlocked.ok(
        "@alice", "TREASURY_SPEND_PROPOSE", {"to": "@bob", "amount": 100, "memo": ""}
    )
    assert unlocked.account("@treasury")["balance"] == 500
    assert unlocked.account("@bob")["balance"] == 0


def test_treasury_proposal_above_balance(unlocked: Chain) -> None:
    payload = {"to": "@bob", "amount": 501, "memo": ""}
    error = expect_rejected(
        unlocked, "insufficient_balance", "@alice", "TREASURY_SPEND_PROPOSE", payload
    )
    assert error.details == {"balance": 500}


def test_treasury_proposal_without_treasury() -> None:
    chain = Chain(params={"economics_lock_days": 0})
    payload = {"to": "@bob", "amount": 1, "memo": ""}
    error = expect_rejected(
        chain, "insufficient_balance", "@alice", "TREASURY_SPEND_PROPOSE", payload
    )
    assert error.details == {"balance": 0}


def test_treasury_proposal_needs_tier_2(unlocked: Chain) -> None:
    payload = {"to": "@bob", "amount": 1, "memo": ""}
    expect_rejected(
        unlocked, "tier_required", "@carol", "TREASURY_SPEND_PROPOSE", payload
    )


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param(
            {"to": "@ghost", "amount": 1, "memo": ""}, "not_found", id="unknown-to"
        ),
        pytest.param(
            {"to": "@treasury", "amount": 1, "memo": ""},
            "invalid_payload",
            id="to-treasury",
        ),
        pytest.param({"to": "@bob", "amount": 1}, "invalid_payload", id="no-memo"),
        pytest.param(
            {"to": "@bob", "amount": 1, "memo": "m" * 501},
            "invalid_payload",
            id="long-memo",
        ),
    ],
)
def test_treasury_proposal_rejects(
    unlocked: Chain, payload: dict[str, Any], code: str
) -> None:
    expect_rejected(unlocked, code, "@alice", "TREASURY_SPEND_PROPOSE", payload)


def test_reward_claim_pays_from_pool(unlocked: Chain) -> None:
    reward = GENESIS_DEFAULTS["reward_amount"]
    receipt = unlocked.ok("@carol", "REWARD_CLAIM", {})
    assert receipt == {"ok": True, "amount": reward}
    assert unlocked.account("@carol")["balance"] == 100 + reward
    assert unlocked.account("@rewards")["balance"] == 50 - reward


def test_reward_claim_empty_pool() -> None:
    pool = AccountSpec("@rewards", 0, (), 25)
    chain = Chain(
        accounts=(*DEFAULT_ACCOUNTS, pool),
        params={"economics_lock_days": 0, "reward_amount": 10},
    )
    chain.ok("@founder", "REWARD_CLAIM", {})
    chain.ok("@alice", "REWARD_CLAIM", {})
    assert chain.account("@rewards")["balance"] == 5
    error = expect_rejected(chain, "reward_pool_empty", "@bob", "REWARD_CLAIM", {})
    assert error.details == {"pool": "@rewards", "balance": 5, "reward_amount": 10}
    assert error.http_status == 409
    assert chain.account("@rewards")["balance"] == 5
    assert chain.account("@bob")["balance"] == 0


def test_reward_claim_without_pool_account() -> None:
    chain = Chain(params={"economics_lock_days": 0})
    error = expect_rejected(chain, "reward_pool_empty", "@alice", "REWARD_CLAIM", {})
    assert error.details == {"pool": "@rewards", "balance": 0, "reward_amount": 10}


@pytest.mark.parametrize(
    ("signer", "tx_type", "payload"),
    [
        pytest.param(
            "@treasury",
            "BALANCE_TRANSFER",
            {"to": "@bob", "amount": 1},
            id="treasury-transfer",
        ),
        pytest.param(
            "@rewards",
            "BALANCE_TRANSFER",
            {"to": "@bob", "amount": 1},
            id="pool-transfer",
        ),
        pytest.param("@treasury", "REWARD_CLAIM", {}, id="treasury-claim"),
        pytest.param("@rewards", "REWARD_CLAIM", {}, id="pool-claim"),
    ],
)
def test_system_accounts_move_no_balance(
    signer: str, tx_type: str, payload: dict[str, Any]
) -> None:
    accounts = (
        *DEFAULT_ACCOUNTS,
        AccountSpec("@treasury", 2, (), 500),
        AccountSpec("@rewards", 2, (), 50),
    )
    chain = Chain(accounts=accounts, params={"economics_lock_days": 0})
    expect_rejected(chain, "forbidden", signer, tx_type, payload)
    assert chain.account("@treasury")["balance"] == 500
    assert chain.account("@rewards")["balance"] == 50


def test_reward_claim_once_per_interval() -> None:
    chain = Chain(
        accounts=(*DEFAULT_ACCOUNTS, REWARD_POOL),
        params={"economics_lock_days": 0, "reward_interval_blocks": 3},
    )
    chain.ok("@carol", "REWARD_CLAIM", {})
    claimed_at = chain.height
    chain.block()
    error = expect_rejected(chain, "conflict", "@carol", "REWARD_CLAIM", {})
    assert error.details == {"next_claim_height": claimed_at + 3}
    assert chain.run("@carol", "REWARD_CLAIM", {})["ok"]


def test_reward_claim_needs_tier_1(unlocked: Chain) -> None:
    expect_rejected(unlocked, "tier_required", "@dave", "REWARD_CLAIM", {})


def test_reward_claim_rejects_payload(unlocked: Chain) -> None:
    expect_rejected(
        unlocked, "invalid_payload", "@carol", "REWARD_CLAIM", {"amount": 5}
    )
