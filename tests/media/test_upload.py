"""Uploads, downloads and the in-node pinner, against one live node with the local backend.

The node runs with healing off, so the last test can show that a lost pin
stays short of replicas. Keep that test last in this module: it enrolls a
second operator, which later pin requests could be assigned to.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cid as pycid
import httpx
import pytest
from e2e.node import Node

from weall.ipfs.unixfs import compute_cid
from weall.protocol import keys
from weall.protocol.envelope import build_envelope

from ._support import Chain, body_hash, session_headers, wait_for, write_chain

pytestmark = pytest.mark.slow

MAX_UPLOAD = 64 * 1024
MAX_REQUEST = 4096
HEAL_INTERVAL = 2
NODE_ENV = {
    "WEALL_BLOCK_INTERVAL_MS": "200",
    "WEALL_PINNER_POLL_S": "0.2",
    "WEALL_PIN_RECHECK_S": "0.5",
    "WEALL_IPFS_ENABLE_HEAL": "0",
    "WEALL_IPFS_HEAL_INTERVAL_BLOCKS": str(HEAL_INTERVAL),
    "WEALL_IPFS_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
    "WEALL_MAX_REQUEST_BYTES": str(MAX_REQUEST),
    "WEALL_RATE_LIMIT_PER_S": "0",
}
ACCOUNTS = {
    "@alice": (2, []),
    "@carol": (1, []),
    "@dave": (0, []),
    "@spare": (2, []),
}


def _bytes(seed: int, size: int = 3000) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    workdir = tmp_path_factory.mktemp("media-node")
    chain = write_chain(workdir, ACCOUNTS, {"heartbeat_ms": 500})
    node = Node(workdir, env=NODE_ENV)
    chain.node = node
    node.start()
    try:
        node.wait_ready(timeout=90.0)
        yield chain
    finally:
        if node.process is not None and node.process.poll() is None:
            node.stop()
    # No request of this module may make the node log a traceback.
    assert "Traceback" not in node.log(), node.log()[-5000:]


@pytest.fixture(scope="module")
def alice_session(chain: Chain) -> keys.KeyPair:
    return chain.issue_session("@alice", ["IPFS_PIN_REQUEST"])


def _node(chain: Chain) -> Node:
    assert chain.node is not None
    return chain.node


def _data(chain: Chain) -> Path:
    return chain.workdir / "data"


def _assert_not_kept(chain: Chain, cid: str) -> None:
    """Nothing of a rejected upload is pinned, recorded, requested or served."""
    assert not (_data(chain) / "ipfs" / "pins" / cid).exists()
    assert not (_data(chain) / "media" / f"{cid}.json").exists()
    assert _node(chain).get(f"/v1/media/{cid}").status_code == 404
    assert chain.status(cid) is None


def _error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def test_upload_returns_cid_and_pin_request(
    chain: Chain, alice_session: keys.KeyPair
) -> None:
    body = _bytes(1, 30_000)

    response = chain.upload(alice_session, "@alice", body, "image/png")

    assert response.status_code == 200, response.text
    document = response.json()
    assert document["cid"] == compute_cid(body)
    assert document["size_bytes"] == len(body)
    status = chain.wait_tx(document["pin_request_tx_id"])
    assert status["status"] == "committed"
    assert status["tx_type"] == "IPFS_PIN_REQUEST"
    assert status["signer"] == "@node"
    assert status["receipt"]["pin_id"] == document["pin_request_tx_id"]
    pin = chain.status(document["cid"])
    assert pin is not None
    assert pin["owner"] == "@alice"
    assert [t["operator"] for t in pin["targets"]] == ["@node"]


def test_pinner_confirms_upload(chain: Chain, alice_session: keys.KeyPair) -> None:
    body = _bytes(2)
    cid = chain.upload(alice_session, "@alice", body).json()["cid"]

    pin = wait_for(
        lambda: (s := chain.status(cid)) is not None and s["durable"] and s, 60
    )

    assert pin["confirmations"] == 1
    assert pin["shortfall"] is False
    assert pin["targets"][0]["state"] == "ok"
    assert (_data(chain) / "ipfs" / "pins" / cid).exists()


@pytest.mark.parametrize(
    ("encoding", "seed"), [("base58btc", 101), ("base64url", 102), ("base32upper", 103)]
)
def test_status_and_download_accept_cid_spellings(
    chain: Chain, alice_session: keys.KeyPair, encoding: str, seed: int
) -> None:
    body = _bytes(seed, 5000)
    upload = chain.upload(alice_session, "@alice", body).json()
    chain.wait_tx(upload["pin_request_tx_id"])
    spelling = pycid.from_string(upload["cid"]).encode(encoding).decode("ascii")
    assert spelling != upload["cid"]

    status = _node(chain).get(f"/v1/media/{spelling}/status")
    download = _node(chain).get(f"/v1/media/{spelling}")

    assert status.status_code == 200, status.text
    assert status.json()["cid"] == upload["cid"]
    assert download.status_code == 200
    assert download.content == body


def test_status_cidv0_looked_up_as_cidv1(chain: Chain) -> None:
    # A dag-pb CID (a file of more than one chunk) has a CIDv0 spelling.
    cid = compute_cid(_bytes(11, 300_000))
    v0 = str(pycid.from_string(cid).to_v0())
    assert v0.startswith("Qm")

    response = _node(chain).get(f"/v1/media/{v0}/status")

    assert response.status_code == 404
    assert _error_code(response) == "not_found"
    assert response.json()["error"]["message"] == f"no pin request for {cid}"


@pytest.mark.parametrize("text", ["not-a-cid", "Qm" + "1" * 44])
def test_status_rejects_invalid_cid(chain: Chain, text: str) -> None:
    response = _node(chain).get(f"/v1/media/{text}/status")

    assert response.status_code == 400
    assert _error_code(response) == "invalid_request"


def test_download_streams_uploaded_bytes(
    chain: Chain, alice_session: keys.KeyPair
) -> None:
    body = _bytes(3, 20_000)
    cid = chain.upload(alice_session, "@alice", body, "image/PNG; q=1").json()["cid"]

    response = _node(chain).get(f"/v1/media/{cid}")

    assert response.status_code == 200
    assert response.content == body
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["content-type"] == "image/png; q=1"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_download_empty_file(chain: Chain, alice_session: keys.KeyPair) -> None:
    response = chain.upload(alice_session, "@alice", b"", "text/plain")
    assert response.status_code == 200, response.text
    cid = response.json()["cid"]

    download = _node(chain).get(f"/v1/media/{cid}")

    assert download.status_code == 200
    assert download.content == b""
    assert download.headers["content-length"] == "0"


@pytest.mark.parametrize(
    ("cid", "status", "code"),
    [
        pytest.param(compute_cid(b"never uploaded"), 404, "not_found", id="unknown"),
        pytest.param("not-a-cid", 400, "invalid_request", id="malformed"),
    ],
)
def test_download_rejects(chain: Chain, cid: str, status: int, code: str) -> None:
    response = _node(chain).get(f"/v1/media/{cid}")

    assert response.status_code == status
    assert _error_code(response) == code


def test_upload_again_returns_existing_pin(
    chain: Chain, alice_session: keys.KeyPair
) -> None:
    body = _bytes(4)
    first = chain.upload(alice_session, "@alice", body).json()
    chain.wait_tx(first["pin_request_tx_id"])

    second = chain.upload(alice_session, "@alice", body)

    assert second.status_code == 200
    assert second.json() == {
        "cid": first["cid"],
        "size_bytes": len(body),
        "pin_id": first["pin_request_tx_id"],
    }


def test_upload_by_tier_1_account(chain: Chain) -> None:
    session = chain.issue_session("@carol", ["IPFS_PIN_REQUEST", "PROFILE_UPDATE"])

    response = chain.upload(session, "@carol", _bytes(5))

    assert response.status_code == 200, response.text
    assert "pin_request_tx_id" in response.json()


def _headers_for(
    chain: Chain, case: str, body: bytes, session: keys.KeyPair
) -> dict[str, str]:
    now = int(time.time() * 1000)
    if case == "missing":
        headers = session_headers(session, "@alice", body)
        del headers["X-WeAll-Signature"]
        return headers
    if case == "clock_skew":
        return session_headers(
            session, "@alice", body, timestamp_ms=now - 6 * 60 * 1000
        )
    if case == "unknown_account":
        return session_headers(session, "@nobody", body)
    if case == "not_session_key":
        return session_headers(keys.generate(), "@alice", body)
    if case == "account_key":
        return session_headers(chain.keys["@alice"], "@alice", body)
    if case == "bad_signature":
        return session_headers(
            session, "@alice", body, signed_hash=body_hash(b"other bytes")
        )
    if case == "malformed_signature":
        headers = session_headers(session, "@alice", body)
        headers["X-WeAll-Signature"] = "u" + "A" * 10
        return headers
    if case == "wrong_path":
        return session_headers(session, "@alice", body, path="/v1/media/upload?x=1")
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        pytest.param("missing", "session_missing", id="missing-header"),
        pytest.param("clock_skew", "session_clock_skew", id="clock-skew"),
        pytest.param("unknown_account", "session_invalid", id="unknown-account"),
        pytest.param("not_session_key", "session_invalid", id="not-a-session-key"),
        pytest.param("account_key", "session_invalid", id="account-key"),
        pytest.param("bad_signature", "session_bad_signature", id="other-body-hash"),
        pytest.param("wrong_path", "session_bad_signature", id="other-path"),
        pytest.param(
            "malformed_signature", "session_bad_signature", id="malformed-signature"
        ),
    ],
)
def test_upload_session_rejected(
    chain: Chain, alice_session: keys.KeyPair, case: str, code: str
) -> None:
    body = _bytes(100 + len(case))

    response = _node(chain).post(
        "/v1/media/upload",
        content=body,
        headers=_headers_for(chain, case, body, alice_session),
    )

    assert response.status_code == 401, response.text
    assert _error_code(response) == code
    _assert_not_kept(chain, compute_cid(body))


def test_upload_session_scope_lacks_pin_request(chain: Chain) -> None:
    session = chain.issue_session("@alice", ["PROFILE_UPDATE"])
    body = _bytes(6)

    response = chain.upload(session, "@alice", body)

    assert response.status_code == 401
    assert _error_code(response) == "session_scope"
    _assert_not_kept(chain, compute_cid(body))


def test_upload_session_revoked(chain: Chain) -> None:
    session = chain.issue_session("@alice", ["IPFS_PIN_REQUEST"])
    chain.commit("@alice", "ACCOUNT_SESSION_KEY_REVOKE", {"pubkey": session.pubkey})
    body = _bytes(7)

    response = chain.upload(session, "@alice", body)

    assert response.status_code == 401
    assert _error_code(response) == "session_revoked"
    _assert_not_kept(chain, compute_cid(body))


def test_upload_session_expired(chain: Chain) -> None:
    session = chain.issue_session("@alice", ["IPFS_PIN_REQUEST"], ttl_ms=2000)
    time.sleep(2.3)
    body = _bytes(8)

    response = chain.upload(session, "@alice", body)

    assert response.status_code == 401
    assert _error_code(response) == "session_expired"
    _assert_not_kept(chain, compute_cid(body))


def test_upload_tier_0_account_rejected(chain: Chain) -> None:
    session = chain.issue_session("@dave", ["IPFS_PIN_REQUEST"])
    body = _bytes(9)

    response = chain.upload(session, "@dave", body)

    assert response.status_code == 401
    assert _error_code(response) == "tier_required"
    _assert_not_kept(chain, compute_cid(body))


def test_upload_replay_rejected(chain: Chain, alice_session: keys.KeyPair) -> None:
    body = _bytes(10)
    headers = session_headers(alice_session, "@alice", body)

    first = _node(chain).post("/v1/media/upload", content=body, headers=headers)
    again = _node(chain).post("/v1/media/upload", content=body, headers=headers)

    assert first.status_code == 200
    assert again.status_code == 401
    assert _error_code(again) == "session_replay"


def test_upload_invalid_content_type(chain: Chain, alice_session: keys.KeyPair) -> None:
    body = _bytes(11)

    response = chain.upload(
        alice_session, "@alice", body, content_type="not a media type"
    )

    assert response.status_code == 415
    assert _error_code(response) == "unsupported_media_type"
    _assert_not_kept(chain, compute_cid(body))


def test_upload_above_request_limit_accepted(
    chain: Chain, alice_session: keys.KeyPair
) -> None:
    body = _bytes(12, MAX_REQUEST * 4)

    response = chain.upload(alice_session, "@alice", body)

    assert response.status_code == 200, response.text
    assert response.json()["size_bytes"] == len(body)


def test_upload_chunked_within_limit(chain: Chain, alice_session: keys.KeyPair) -> None:
    body = _bytes(13, MAX_UPLOAD)
    headers = session_headers(alice_session, "@alice", body)

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 10_000):
            yield body[start : start + 10_000]

    response = _node(chain).post("/v1/media/upload", content=pieces(), headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["cid"] == compute_cid(body)


def _raw_request(
    node: Node, head: dict[str, str], chunks: list[bytes]
) -> tuple[str, float]:
    """Send headers and body pieces without ending the body; return the status line and wait."""
    lines = ["POST /v1/media/upload HTTP/1.1", f"Host: 127.0.0.1:{node.port}"]
    lines += [f"{name}: {value}" for name, value in head.items()]
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        for chunk in chunks:
            sock.sendall(chunk)
        started = time.monotonic()
        reply = sock.recv(65536).decode("latin-1", errors="replace")
        return reply.split("\r\n", 1)[0], time.monotonic() - started


def test_upload_content_length_over_limit(
    chain: Chain, alice_session: keys.KeyPair
) -> None:
    head = session_headers(alice_session, "@alice", b"")
    head["Content-Length"] = str(MAX_UPLOAD + 1)

    status_line, _ = _raw_request(_node(chain), head, [])

    assert status_line.startswith("HTTP/1.1 413")


def test_upload_chunked_cut_off_past_limit(
    chain: Chain, alice_session: keys.KeyPair
) -> None:
    body = _bytes(14, MAX_UPLOAD + 1)
    head = session_headers(alice_session, "@alice", body)
    head["Transfer-Encoding"] = "chunked"
    chunks = [
        f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        for piece in (body[i : i + 16_384] for i in range(0, len(body), 16_384))
    ]

    # The final zero-length chunk is never sent, so only the count can end it.
    status_line, _ = _raw_request(_node(chain), head, chunks)

    assert status_line.startswith("HTTP/1.1 413")
    _assert_not_kept(chain, compute_cid(body))


def test_post_with_uploaded_media(chain: Chain, alice_session: keys.KeyPair) -> None:
    upload = chain.upload(alice_session, "@alice", _bytes(15), "image/jpeg").json()
    chain.wait_tx(upload["pin_request_tx_id"])

    receipt = chain.commit(
        "@alice", "CONTENT_POST_CREATE", {"body": "a picture", "media": [upload["cid"]]}
    )

    post = _node(chain).get(f"/v1/content/{receipt['post_id']}").json()
    assert post["media"] == [upload["cid"]]


def test_post_with_unrequested_media_rejected(chain: Chain) -> None:
    nonce = _node(chain).get("/v1/accounts/@alice").json()["next_nonce"]
    envelope = build_envelope(
        chain.keys["@alice"],
        chain_id="weall-dev",
        tx_type="CONTENT_POST_CREATE",
        signer="@alice",
        nonce=nonce,
        payload={"body": "x", "media": [compute_cid(b"absent")]},
    )

    response = _node(chain).post("/v1/tx/submit", json=envelope)

    assert response.status_code == 400
    assert _error_code(response) == "invalid_payload"


def test_operator_pins_pages(chain: Chain, alice_session: keys.KeyPair) -> None:
    for seed in (16, 17):
        chain.wait_tx(
            chain.upload(alice_session, "@alice", _bytes(seed)).json()[
                "pin_request_tx_id"
            ]
        )
    node = _node(chain)

    everything = node.get("/v1/operators/@node/pins?limit=1000").json()
    first = node.get("/v1/operators/@node/pins?limit=1").json()
    second = node.get(
        f"/v1/operators/@node/pins?limit=1&cursor={first['next_cursor']}"
    ).json()

    assert everything["operator"] == "@node"
    assert everything["active"] is True
    assert everything["next_cursor"] is None
    assert len(everything["pins"]) >= 2
    assert [p["pin_id"] for p in everything["pins"]] == sorted(
        p["pin_id"] for p in everything["pins"]
    )
    # The pinner may confirm a pin between the reads, so only ids are compared.
    ids = [p["pin_id"] for p in everything["pins"]]
    assert [p["pin_id"] for p in first["pins"]] == ids[:1]
    assert [p["pin_id"] for p in second["pins"]] == ids[1:2]
    assert set(first["pins"][0]) == {
        "pin_id",
        "cid",
        "size_bytes",
        "assigned_height",
        "ok",
    }


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        pytest.param(
            "/v1/operators/@nobody/pins", 404, "not_found", id="unknown-account"
        ),
        pytest.param(
            "/v1/operators/nobody/pins", 400, "invalid_request", id="malformed-account"
        ),
        pytest.param(
            "/v1/operators/@node/pins?limit=0", 400, "invalid_request", id="limit-0"
        ),
        pytest.param(
            "/v1/operators/@node/pins?limit=1001",
            400,
            "invalid_request",
            id="limit-1001",
        ),
        pytest.param(
            "/v1/operators/@node/pins?limit=x", 400, "invalid_request", id="limit-text"
        ),
        pytest.param(
            "/v1/operators/@node/pins?cursor=zz",
            400,
            "invalid_request",
            id="bad-cursor",
        ),
    ],
)
def test_operator_pins_rejects(chain: Chain, path: str, status: int, code: str) -> None:
    response = _node(chain).get(path)

    assert response.status_code == status
    assert _error_code(response) == code


def test_operator_pins_of_non_operator(chain: Chain) -> None:
    document = _node(chain).get("/v1/operators/@alice/pins").json()

    assert document["active"] is False
    assert document["pins"] == []
    assert document["capacity_bytes"] is None


def _heal_txs(node: Node, start: int) -> list[dict[str, Any]]:
    found = []
    cursor = start
    while True:
        page = node.get(f"/v1/blocks?from={cursor}&limit=100").json()
        for block in page["blocks"]:
            found += [
                t for t in block["txs"] if t["envelope"]["tx_type"] == "IPFS_PIN_HEAL"
            ]
        if not page["blocks"]:
            return found
        cursor = page["next_from"]


def test_lost_pin_confirmed_not_ok_and_not_healed(
    chain: Chain, alice_session: keys.KeyPair
) -> None:
    node = _node(chain)
    cid = chain.upload(alice_session, "@alice", _bytes(18)).json()["cid"]
    wait_for(lambda: (s := chain.status(cid)) is not None and s["durable"], 60)
    # A second operator makes a heal possible, so only the setting stops it.
    chain.commit("@spare", "STORAGE_OPERATOR_ENROLL", {"capacity_bytes": 10**9})

    (_data(chain) / "ipfs" / "pins" / cid).unlink()

    lost = wait_for(
        lambda: (s := chain.status(cid)) is not None and s["shortfall"] and s, 60
    )
    assert lost["confirmations"] == 0
    assert lost["durable"] is False
    assert lost["targets"][0]["operator"] == "@node"
    assert lost["targets"][0]["state"] == "failed"
    assert lost["targets"][0]["confirmation"]["ok"] is False
    failed_at = lost["targets"][0]["confirmation"]["height"]
    wait_for(
        lambda: (
            node.get("/v1/chain/head").json()["height"] >= failed_at + 4 * HEAL_INTERVAL
        ),
        60,
    )
    assert _heal_txs(node, failed_at) == []
    still = chain.status(cid)
    assert still is not None
    assert still["targets"] == lost["targets"]
