"""Producer and followers on loopback: same reads, forwarded writes, restarts, chains."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.node import Node
from weall.protocol import keys
from weall.protocol.envelope import build_envelope
from weall.protocol.keys import KeyPair

from .support import (
    READ_ROUTES,
    follower_node,
    follower_status,
    head_height,
    same_reads,
    socket_call,
    start,
    wait_for,
    wait_synced,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def producer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    node = start(
        Node(
            tmp_path_factory.mktemp("producer"),
            env={"WEALL_BLOCK_INTERVAL_MS": "200"},
            args=["--actors", "producer,api"],
        )
    )
    try:
        yield node
    finally:
        node.stop()


def _founder(node: Node) -> KeyPair:
    return keys.load_key_file(node.workdir / "data" / "keys" / "founder.key")


def _envelope(
    via: Node, key: KeyPair, tx_type: str, payload: dict[str, Any]
) -> dict[str, Any]:
    account = via.get(f"/v1/accounts/{key.account}").json()
    assert key.account is not None
    return build_envelope(
        key,
        chain_id="weall-dev",
        tx_type=tx_type,
        signer=key.account,
        nonce=account["next_nonce"],
        payload=payload,
    )


def _posts(via: Node, key: KeyPair, bodies: list[str]) -> list[dict[str, Any]]:
    """Signed posts with consecutive nonces from the account's next nonce on ``via``."""
    assert key.account is not None
    first = via.get(f"/v1/accounts/{key.account}").json()["next_nonce"]
    return [
        build_envelope(
            key,
            chain_id="weall-dev",
            tx_type="CONTENT_POST_CREATE",
            signer=key.account,
            nonce=first + i,
            payload={"body": body},
        )
        for i, body in enumerate(bodies)
    ]


def _committed(node: Node, tx_id: str) -> dict[str, Any]:
    def status() -> dict[str, Any] | None:
        response = node.get(f"/v1/tx/{tx_id}")
        document: dict[str, Any] = response.json()
        return (
            document
            if response.status_code == 200 and document["status"] == "committed"
            else None
        )

    return wait_for(status, condition=f"{tx_id} committed on {node.url}")


def _submit(via: Node, envelope: dict[str, Any]) -> str:
    response = via.post("/v1/tx/submit", json=envelope)
    assert response.status_code == 202, response.text
    return str(response.json()["tx_id"])


def _make_content(producer: Node) -> tuple[str, str]:
    """Submit posts, a comment, a new account and its profile.

    Returns the id of the post and the id of the comment.
    """
    founder = _founder(producer)
    post_envelope = _envelope(
        producer, founder, "CONTENT_POST_CREATE", {"body": "first"}
    )
    post = _submit(producer, post_envelope)
    _committed(producer, post)

    comment_payload = {"parent_id": post, "body": "a comment"}
    comment_envelope = _envelope(
        producer, founder, "CONTENT_COMMENT_CREATE", comment_payload
    )
    comment = _submit(producer, comment_envelope)

    alice = keys.generate("@alice")
    register = build_envelope(
        alice,
        chain_id="weall-dev",
        tx_type="ACCOUNT_REGISTER",
        signer="@alice",
        nonce=0,
        payload={},
    )
    _committed(producer, _submit(producer, register))
    profile_envelope = _envelope(
        producer, alice, "PROFILE_UPDATE", {"display_name": "Alice"}
    )
    profile = _submit(producer, profile_envelope)

    _committed(producer, comment)
    _committed(producer, profile)
    return post, comment


def test_follower_serves_same_reads(tmp_path: Path, producer: Node) -> None:
    post, comment = _make_content(producer)
    follower = start(
        follower_node(
            tmp_path / "follower", producer, producer.workdir / "data" / "genesis.json"
        )
    )
    try:
        routes = [route.format(post=post, tx=comment) for route in READ_ROUTES]
        height = head_height(producer)
        routes += [
            f"/v1/blocks/{height}",
            "/v1/accounts/@alice",
            f"/v1/content/{comment}",
        ]
        documents = same_reads(producer, follower, routes)

        status = follower_status(follower)
        checkpoint = socket_call(follower, "checkpoint", mode="PASSIVE")
        bad_mode = socket_call(follower, "checkpoint", mode="SOMETIMES")
        unknown = socket_call(follower, "rewind")
        health = follower.get("/health").json()
    finally:
        follower.stop()

    assert documents["/v1/content/" + post]["comments"][0]["body"] == "a comment"
    assert documents["/v1/accounts/@alice"]["profile"]["display_name"] == "Alice"
    assert status["state"] == "caught_up"
    assert status["rejected"] is None
    assert status["role"] == "follower"
    assert checkpoint["ok"] is True
    assert bad_mode["error"]["code"] == "invalid_request"
    assert unknown["error"]["code"] == "invalid_request"
    assert health["ok"] is True
    assert health["follower"]["state"] == "caught_up"
    assert health["follower"]["upstream"] == producer.url
    # The journal settings come from the follower actor, which writes the database.
    assert health["storage"]["source"] == "follower"
    assert health["storage"]["journal_mode"] == "wal"
    assert health["storage"]["synchronous"] == "NORMAL"
    assert status["synchronous"] == "NORMAL"


def test_follower_forwards_submissions(tmp_path: Path, producer: Node) -> None:
    follower = start(
        follower_node(
            tmp_path / "follower", producer, producer.workdir / "data" / "genesis.json"
        )
    )
    try:
        wait_synced(follower, producer)
        founder = _founder(producer)
        envelope = _envelope(
            follower, founder, "CONTENT_POST_CREATE", {"body": "via the follower"}
        )
        tx_id = _submit(follower, envelope)
        on_producer = _committed(producer, tx_id)
        on_follower = _committed(follower, tx_id)
        again = follower.post("/v1/tx/submit", json=envelope)

        batch = _posts(follower, founder, [f"batch {i}" for i in range(3)])
        response = follower.post("/v1/tx/batch", json={"envelopes": batch})
        results = response.json()["results"]
        for result in results:
            _committed(follower, result["tx_id"])

        invalid = follower.post("/v1/tx/submit", json={"chain_id": "weall-dev"})
        not_json = follower.post(
            "/v1/tx/submit", content=b"{", headers={"content-type": "application/json"}
        )
        cli = follower.cli(
            "tx",
            "post",
            "through the cli",
            "--key",
            str(producer.workdir / "data" / "keys" / "founder.key"),
            "--url",
            follower.url,
            "--wait",
        )
    finally:
        follower.stop()
    assert on_follower == on_producer
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert response.status_code == 200
    assert [r["http_status"] for r in results] == [202, 202, 202]
    assert invalid.status_code == 400
    assert invalid.json()["error"]["code"] == "invalid_envelope"
    assert not_json.status_code == 400
    assert not_json.json()["error"]["code"] == "invalid_json"
    assert cli.returncode == 0, cli.stderr
    assert '"status": "committed"' in cli.stdout


def test_follower_catches_up_after_restart(tmp_path: Path, producer: Node) -> None:
    follower = start(
        follower_node(
            tmp_path / "follower", producer, producer.workdir / "data" / "genesis.json"
        )
    )
    try:
        stopped_at = wait_synced(follower, producer)
    finally:
        assert follower.stop() == 0
    founder = _founder(producer)
    tx_ids = [
        _submit(producer, envelope)
        for envelope in _posts(
            producer, founder, [f"while stopped {i}" for i in range(5)]
        )
    ]
    for tx_id in tx_ids:
        _committed(producer, tx_id)
    assert head_height(producer) > stopped_at
    start(follower)
    try:
        same_reads(
            producer, follower, ["/v1/chain/head", "/v1/state/snapshot", "/v1/feed"]
        )
        for tx_id in tx_ids:
            assert follower.get(f"/v1/tx/{tx_id}").json()["status"] == "committed"
    finally:
        follower.stop()
    assert "caught up height=" in follower.log()


def test_follower_follows_a_follower(tmp_path: Path, producer: Node) -> None:
    genesis = producer.workdir / "data" / "genesis.json"
    first = start(follower_node(tmp_path / "first", producer, genesis))
    try:
        second = start(follower_node(tmp_path / "second", first, genesis))
        try:
            founder = _founder(producer)
            wait_synced(second, producer)
            tx_id = _submit(
                second,
                _envelope(
                    second, founder, "CONTENT_POST_CREATE", {"body": "two hops away"}
                ),
            )
            _committed(producer, tx_id)
            _committed(second, tx_id)
            wait_synced(second, first)
            same_reads(
                producer,
                second,
                [
                    "/v1/chain/head",
                    "/v1/state/snapshot",
                    "/v1/feed",
                    f"/v1/tx/{tx_id}",
                    f"/v1/content/{tx_id}",
                ],
            )
            status = follower_status(second)
        finally:
            second.stop()
    finally:
        first.stop()
    assert status["upstream"] == first.url
    assert status["state"] == "caught_up"


def test_follower_sync_logs_progress(tmp_path: Path, producer: Node) -> None:
    posted = producer.tx("post", "a post for the follower to sync")
    assert posted.returncode == 0, posted.stderr
    follower = start(
        follower_node(
            tmp_path / "follower", producer, producer.workdir / "data" / "genesis.json"
        )
    )
    try:
        wait_synced(follower, producer)
        lines = [
            line for line in follower.log().splitlines() if "progress task=sync" in line
        ]
        assert lines, follower.log()[-2000:]
        assert "total=" in lines[-1]
        assert "done=true" in lines[-1]
    finally:
        follower.stop()
