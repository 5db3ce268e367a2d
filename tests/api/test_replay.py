"""Replay and confusion: transactions and session requests used out of context.

Session requests are checked with ``weall.api.session`` against a session key
that a live account committed with ``weall tx raw``; when the node has the
session-gated upload route, the same cases are sent to it over HTTP.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from weall.api.session import (
    ReplayCache,
    SessionError,
    SessionHeaders,
    request_signing_bytes,
    verify_session,
)
from weall.protocol import keys
from weall.protocol.encoding import b64url_encode, hash_bytes

from ._live import (
    CID,
    World,
    batch,
    envelope,
    next_nonce,
    pool_size,
    stable_state,
    submit,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.slow

UPLOAD = "/v1/media/upload"
SCOPE = "IPFS_PIN_REQUEST"


def _issue_session_key(world: World, scope: list[str]) -> keys.KeyPair:
    session = keys.generate("@founder")
    payload = {
        "pubkey": session.pubkey,
        "scope": scope,
        "expires_at_ms": int(time.time() * 1000) + 3_600_000,
    }
    result = world.node.tx("raw", "ACCOUNT_SESSION_KEY_ISSUE", json.dumps(payload))
    assert result.returncode == 0, result.stderr
    return session


@pytest.fixture(scope="module")
def session_key(world: World) -> keys.KeyPair:
    return _issue_session_key(world, [SCOPE])


def _headers(
    key: keys.KeyPair,
    method: str,
    path: str,
    body: bytes,
    *,
    account: str = "@founder",
    timestamp_ms: int | None = None,
) -> dict[str, str]:
    timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    message = request_signing_bytes(method, path, timestamp, hash_bytes(body))
    return {
        "X-WeAll-Account": account,
        "X-WeAll-Session-Key": key.pubkey,
        "X-WeAll-Timestamp": str(timestamp),
        "X-WeAll-Signature": key.sign(message),
    }


def _verify(
    world: World,
    headers: dict[str, str],
    *,
    method: str = "POST",
    path: str = UPLOAD,
    body: bytes = b"media",
    replay: ReplayCache | None = None,
    scope: str = SCOPE,
    revoked: bool = False,
) -> dict[str, Any]:
    parsed = SessionHeaders.from_headers(headers)
    account = world.node.get(f"/v1/accounts/{parsed.account}").json()
    params = world.node.get("/v1/state/snapshot").json()["params"]
    return verify_session(
        parsed,
        account=account,
        revoked=revoked,
        required_scope=scope,
        params=params,
        method=method,
        path_with_query=path,
        body_hash=hash_bytes(body),
        replay=replay,
    )


def _rejected(code: str, call: Any) -> None:
    with pytest.raises(SessionError) as caught:
        call()
    assert caught.value.code == code, caught.value.message


def test_session_request_verifies_once(
    world: World, session_key: keys.KeyPair, tmp_path: Path
) -> None:
    replay = ReplayCache(tmp_path / "session-replay.db")
    headers = _headers(session_key, "POST", UPLOAD, b"media")
    assert _verify(world, headers, replay=replay)["pubkey"] == session_key.pubkey
    _rejected("session_replay", lambda: _verify(world, headers, replay=replay))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("path", "/v1/media/upload?x=1"),
        ("path", "/v1/tx/submit"),
        ("method", "PUT"),
        ("body", b"other media"),
    ],
    ids=["query", "other-path", "other-method", "other-body"],
)
def test_session_signature_bound_to_request(
    world: World, session_key: keys.KeyPair, field: str, value: Any
) -> None:
    headers = _headers(session_key, "POST", UPLOAD, b"media")
    options: dict[str, Any] = {field: value}
    _rejected(
        "session_bad_signature",
        lambda: _verify(world, headers, **options),
    )


def test_session_request_rejects_stale_timestamp(
    world: World, session_key: keys.KeyPair
) -> None:
    stale = int(time.time() * 1000) - 6 * 60 * 1000
    headers = _headers(session_key, "POST", UPLOAD, b"media", timestamp_ms=stale)
    _rejected("session_clock_skew", lambda: _verify(world, headers))


def test_session_key_of_another_account(
    world: World, session_key: keys.KeyPair
) -> None:
    headers = _headers(session_key, "POST", UPLOAD, b"media", account="@alice")
    _rejected("session_invalid", lambda: _verify(world, headers))


def test_session_key_out_of_scope(world: World, session_key: keys.KeyPair) -> None:
    headers = _headers(session_key, "POST", UPLOAD, b"media")
    _rejected(
        "session_scope",
        lambda: _verify(world, headers, scope="CONTENT_POST_CREATE"),
    )


def test_account_key_is_not_a_session_key(world: World) -> None:
    headers = _headers(world.founder, "POST", UPLOAD, b"media")
    _rejected("session_invalid", lambda: _verify(world, headers))


def test_revoked_session_key_is_rejected(world: World) -> None:
    key = _issue_session_key(world, [SCOPE])
    result = world.node.tx(
        "raw", "ACCOUNT_SESSION_KEY_REVOKE", json.dumps({"pubkey": key.pubkey})
    )
    assert result.returncode == 0, result.stderr
    headers = _headers(key, "POST", UPLOAD, b"media")
    _rejected("session_invalid", lambda: _verify(world, headers))
    _rejected(
        "session_revoked",
        lambda: _verify(world, headers, revoked=True),
    )


def _upload(
    world: World, key: keys.KeyPair, body: bytes = b"session media"
) -> httpx.Response:
    headers = _headers(key, "POST", UPLOAD, body)
    return httpx.post(
        f"{world.node.url}{UPLOAD}",
        content=body,
        headers={**headers, "content-type": "text/plain"},
        timeout=30,
    )


def _error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def test_account_route_lists_session_keys(
    world: World, session_key: keys.KeyPair
) -> None:
    response = world.node.get("/v1/accounts/@founder")
    assert response.status_code == 200
    document = response.json()
    listed = {entry["pubkey"]: entry for entry in document["session_keys"]}
    entry = listed[session_key.pubkey]
    assert set(entry) == {"pubkey", "scope", "expires_at_ms"}
    assert entry["scope"] == [SCOPE]
    assert isinstance(entry["expires_at_ms"], int)
    assert entry["expires_at_ms"] > int(time.time() * 1000)
    for other in document["session_keys"]:
        assert set(other) == {"pubkey", "scope", "expires_at_ms"}
    secret = b64url_encode(bytes(session_key.signing_key))
    assert secret not in response.text
    assert secret[1:] not in response.text
    assert "secret" not in response.text.lower()


def test_revoked_session_key_cannot_be_reissued(world: World) -> None:
    key = _issue_session_key(world, [SCOPE])
    result = world.node.tx(
        "raw", "ACCOUNT_SESSION_KEY_REVOKE", json.dumps({"pubkey": key.pubkey})
    )
    assert result.returncode == 0, result.stderr

    before = stable_state(world)
    payload = {
        "pubkey": key.pubkey,
        "scope": [SCOPE],
        "expires_at_ms": int(time.time() * 1000) + 3_600_000,
    }
    nonce = next_nonce(world.node, "@founder")
    response = submit(
        world.node,
        envelope(world, world.founder, "ACCOUNT_SESSION_KEY_ISSUE", payload, nonce),
    )
    assert response.status_code == 409, response.text
    assert _error_code(response) == "key_revoked"
    assert response.json()["error"]["details"]["pubkey"] == key.pubkey
    assert stable_state(world) == before

    listed = [
        s["pubkey"]
        for s in world.node.get("/v1/accounts/@founder").json()["session_keys"]
    ]
    assert key.pubkey not in listed

    # The key neither signs transactions nor authenticates requests.
    use = envelope(
        world,
        key,
        "IPFS_PIN_REQUEST",
        {"cid": CID, "size_bytes": 1},
        nonce,
        signer="@founder",
    )
    response = submit(world.node, use)
    assert response.status_code == 403, response.text
    assert _error_code(response) == "key_not_allowed"
    upload = _upload(world, key)
    assert upload.status_code == 401, upload.text
    assert _error_code(upload) == "session_revoked"
    assert stable_state(world) == before


def test_expired_session_key_answers_expired(world: World) -> None:
    # Long enough for the issue to commit on a loaded machine, short enough
    # to wait for.
    ttl_ms = 6000
    old = keys.generate("@founder")
    expires = int(time.time() * 1000) + ttl_ms
    payload = {"pubkey": old.pubkey, "scope": [SCOPE], "expires_at_ms": expires}
    result = world.node.tx("raw", "ACCOUNT_SESSION_KEY_ISSUE", json.dumps(payload))
    assert result.returncode == 0, result.stderr
    time.sleep(max(0.0, (expires - time.time() * 1000) / 1000 + 0.2))
    response = _upload(world, old)
    assert response.status_code == 401, response.text
    assert _error_code(response) == "session_expired"
    # Issuing another key drops the expired one from the listed session keys.
    _issue_session_key(world, [SCOPE])
    listed = [
        s["pubkey"]
        for s in world.node.get("/v1/accounts/@founder").json()["session_keys"]
    ]
    assert old.pubkey not in listed
    response = _upload(world, old)
    assert response.status_code == 401, response.text
    assert _error_code(response) == "session_expired"


def _upload_route_exists(world: World) -> bool:
    response = httpx.request("OPTIONS", f"{world.node.url}{UPLOAD}", timeout=10)
    return response.status_code != 404


def test_upload_route_rejects_session_misuse(
    world: World, session_key: keys.KeyPair
) -> None:
    if not _upload_route_exists(world):
        pytest.skip("the node has no media upload route")
    url = f"{world.node.url}{UPLOAD}"
    body = b"media bytes"
    good = _headers(session_key, "POST", UPLOAD, body)
    first = httpx.post(
        url, content=body, headers={**good, "content-type": "text/plain"}, timeout=30
    )
    assert first.status_code < 300, first.text
    pin_request = first.json().get("pin_request_tx_id")
    if pin_request:
        # The upload makes a pin request, and the pinner then confirms the pin.
        # Both land before the next test reads the state.
        wait_status(world.node, pin_request)
        status_path = f"/v1/media/{first.json()['cid']}/status"
        wait_for(lambda: world.node.get(status_path).json().get("durable"))
        wait_for(lambda: pool_size(world.node) == 0)
    cases = {
        "replay": (good, body),
        "other body": (_headers(session_key, "POST", UPLOAD, body), b"other bytes"),
        "other path": (_headers(session_key, "POST", "/v1/tx/submit", body), body),
        "no headers": ({}, body),
    }
    for label, (headers, content) in cases.items():
        response = httpx.post(
            url,
            content=content,
            headers={**headers, "content-type": "text/plain"},
            timeout=30,
        )
        assert response.status_code == 401, (label, response.text)
        assert response.json()["error"]["code"].startswith("session_"), label


# -- transactions -----------------------------------------------------------------------


def _other_chain_envelope(world: World) -> dict[str, Any]:
    nonce = next_nonce(world.node, "@founder")
    return envelope(
        world,
        world.founder,
        "CONTENT_POST_CREATE",
        {"body": "x"},
        nonce,
        chain_id="weall-other",
    )


def test_envelope_for_another_chain_is_rejected(world: World) -> None:
    before = stable_state(world)
    other = _other_chain_envelope(world)
    response = submit(world.node, other)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "wrong_chain"
    # Changing the chain id after signing breaks the signature instead.
    moved = {**other, "chain_id": world.chain_id}
    response = submit(world.node, moved)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_signature"
    assert stable_state(world) == before


def test_wrong_chain_checked_before_signature(world: World) -> None:
    before = stable_state(world)
    other = _other_chain_envelope(world)
    forged = {**other, "sig": world.alice.sign(b"other bytes")}
    response = submit(world.node, forged)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "wrong_chain"
    # Batches above four envelopes are checked in a worker thread, in the same order.
    for size in (1, 6):
        results = batch(world.node, [forged] * size)
        assert [r["error"]["code"] for r in results] == ["wrong_chain"] * size
    assert stable_state(world) == before


def test_unknown_tx_type_is_unsupported(world: World) -> None:
    before = stable_state(world)
    nonce = next_nonce(world.node, "@founder")
    document = envelope(world, world.founder, "CONTENT_TELEPORT", {}, nonce)
    response = submit(world.node, document)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_type"
    assert error["details"] == {"tx_type": "CONTENT_TELEPORT"}
    assert stable_state(world) == before


def test_committed_envelope_replay_is_duplicate(world: World) -> None:
    nonce = next_nonce(world.node, "@founder")
    document = envelope(
        world, world.founder, "CONTENT_POST_CREATE", {"body": "once"}, nonce
    )
    first = submit(world.node, document)
    assert first.status_code == 202
    assert wait_status(world.node, first.json()["tx_id"])["status"] == "committed"
    before = stable_state(world)
    again = submit(world.node, document)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["status"] == "committed"
    assert stable_state(world) == before


def _same_block(
    world: World, first: dict[str, Any], second: dict[str, Any]
) -> dict[str, Any]:
    results = batch(world.node, [first, second])
    assert [r["http_status"] for r in results] == [202, 202], results
    revoke = wait_status(world.node, results[0]["tx_id"])
    use = wait_status(world.node, results[1]["tx_id"])
    assert revoke["status"] == "committed"
    assert revoke["receipt"]["ok"] is True
    assert use["height"] == revoke["height"], (revoke, use)
    return use


def test_key_revoked_in_same_block_is_rejected(world: World) -> None:
    extra = keys.generate("@founder")
    nonce = next_nonce(world.node, "@founder")
    added = submit(
        world.node,
        envelope(
            world, world.founder, "ACCOUNT_KEY_ADD", {"pubkey": extra.pubkey}, nonce
        ),
    )
    assert added.status_code == 202, added.text
    assert wait_status(world.node, added.json()["tx_id"])["receipt"]["ok"] is True
    revoke = envelope(
        world, world.founder, "ACCOUNT_KEY_REVOKE", {"pubkey": extra.pubkey}, nonce + 1
    )
    use = envelope(
        world,
        extra,
        "CONTENT_POST_CREATE",
        {"body": "signed by a revoked key"},
        nonce + 2,
    )
    status = _same_block(world, revoke, use)
    # Included with an ok: false receipt, which the status route reports as rejected.
    assert status["status"] == "rejected"
    assert status["receipt"]["ok"] is False
    assert status["receipt"]["code"] == "key_not_allowed"
    assert next_nonce(world.node, "@founder") == nonce + 3


def test_session_key_revoked_in_same_block_is_rejected(world: World) -> None:
    session = _issue_session_key(world, ["CONTENT_POST_CREATE"])
    nonce = next_nonce(world.node, "@founder")
    revoke = envelope(
        world,
        world.founder,
        "ACCOUNT_SESSION_KEY_REVOKE",
        {"pubkey": session.pubkey},
        nonce,
    )
    use = envelope(
        world,
        session,
        "CONTENT_POST_CREATE",
        {"body": "signed by a revoked session"},
        nonce + 1,
    )
    status = _same_block(world, revoke, use)
    assert status["status"] == "rejected"
    assert status["receipt"]["ok"] is False
    assert status["receipt"]["code"] == "key_not_allowed"
