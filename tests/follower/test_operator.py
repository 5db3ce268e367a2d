"""A follower as a storage operator: its own key, its own pinner and healer, one writer."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.node import Node
from tests.helpers import CID
from tests.media._support import session_headers
from weall.protocol import keys
from weall.protocol.envelope import build_envelope

from .chain_builder import BuiltChain, account_key, write_chain_files
from .support import follower_node, socket_call, start, wait_for, wait_synced

pytestmark = pytest.mark.slow

FOLLOWER_ACTORS = ("follower", "checkpointer", "pinner", "healer", "api")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> BuiltChain:
    operator = account_key("@op1")
    extra = [
        {
            "id": "@op1",
            "pubkey": operator.pubkey,
            "poh_tier": 2,
            "roles": ["node_operator"],
            "balance": 0,
        }
    ]
    # Two replicas, so that a pin is assigned to @node and to @op1.
    return write_chain_files(
        tmp_path_factory.mktemp("producer"),
        extra_accounts=extra,
        params={"replication_factor": 2},
    )


@pytest.fixture(scope="module")
def producer(chain: BuiltChain) -> Iterator[Node]:
    node = start(
        Node(
            chain.workdir,
            env={"WEALL_BLOCK_INTERVAL_MS": "200"},
            args=["--actors", "producer,api"],
        )
    )
    try:
        yield node
    finally:
        node.stop()


def _access_modes(pid: int, target: Path) -> list[int]:
    modes = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != str(target):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                for line in info:
                    if line.startswith("flags:"):
                        modes.append(int(line.split()[1], 8) & os.O_ACCMODE)
        except OSError:
            continue
    return modes


def _committed(node: Node, tx_id: str) -> dict[str, Any]:
    def status() -> dict[str, Any] | None:
        response = node.get(f"/v1/tx/{tx_id}")
        document: dict[str, Any] = response.json()
        return (
            document
            if response.status_code == 200 and document["status"] == "committed"
            else None
        )

    return wait_for(status, condition=f"{tx_id} committed")


def _request_pin(producer: Node, chain: BuiltChain) -> str:
    nonce = producer.get("/v1/accounts/@founder").json()["next_nonce"]
    envelope = build_envelope(
        chain.founder,
        chain_id="weall-dev",
        tx_type="IPFS_PIN_REQUEST",
        signer="@founder",
        nonce=nonce,
        payload={"cid": CID, "size_bytes": 1},
    )
    response = producer.post("/v1/tx/submit", json=envelope)
    assert response.status_code == 202, response.text
    receipt = _committed(producer, response.json()["tx_id"])["receipt"]
    return str(receipt["pin_id"])


def test_follower_runs_operator_actors(
    tmp_path: Path, chain: BuiltChain, producer: Node
) -> None:
    key_path = tmp_path / "op1.key"
    keys.write_key_file(key_path, account_key("@op1"))
    follower = follower_node(
        tmp_path / "follower",
        producer,
        chain.genesis_path,
        actors=None,
        env={
            "WEALL_NODE_KEY_PATH": str(key_path),
            "WEALL_IPFS_HEAL_INTERVAL_BLOCKS": "1",
        },
    )
    start(follower)
    try:
        wait_synced(follower, producer)
        actors = json.loads((follower.run_dir / "actors.json").read_text())
        pin_id = _request_pin(producer, chain)
        wait_for(
            lambda: follower.get(f"/v1/pins/{pin_id}").status_code == 200,
            condition="pin on follower",
        )

        # The operator reports that it lost the content, through the
        # follower, as its pinner would: the pin now has a shortfall.
        heal = socket_call(
            follower, "system_tx", tx_type="IPFS_PIN_HEAL", payload={"pin_id": pin_id}
        )
        confirm = socket_call(
            follower,
            "system_tx",
            tx_type="IPFS_PIN_CONFIRM",
            payload={"pin_id": pin_id, "ok": False},
        )
        result = confirm["result"]
        if result["http"] == 202:
            committed = _committed(producer, result["tx_id"])
            on_follower = _committed(follower, result["tx_id"])
        else:
            # The follower's pinner sent the same report first, with the same key.
            committed = on_follower = None
            assert result["error"]["code"] == "conflict", result

        # The follower's healer reports the shortfall in its log and heals nothing.
        wait_for(
            lambda: f"pin shortfall pin_id={pin_id}" in follower.log(),
            condition="the follower's healer logs the shortfall",
        )
        db = (tmp_path / "follower" / "data" / "weall.db").resolve()
        pids = follower.actor_pids()
        modes = {name: _access_modes(pid, db) for name, pid in pids.items()}
    finally:
        follower.stop()
    on_producer = producer.get(f"/v1/pins/{pin_id}").json()
    operator_target = next(t for t in on_producer["targets"] if t["operator"] == "@op1")

    assert sorted(actors) == sorted(FOLLOWER_ACTORS)
    assert all(info["state"] == "running" for info in actors.values())
    assert modes["follower"], "the follower actor holds the database open"
    assert all(mode == os.O_RDWR for mode in modes["follower"])
    assert modes["healer"], "the healer read the database"
    assert modes["api"], "the api read the database"
    for name in ("checkpointer", "pinner", "healer", "api"):
        assert all(mode == os.O_RDONLY for mode in modes[name]), name
    assert heal["ok"] is False
    assert heal["error"]["code"] == "role_required"
    assert operator_target["state"] == "failed"
    assert operator_target["confirmation"]["ok"] is False
    assert on_producer["shortfall"] is True
    if committed is not None:
        assert committed["signer"] == "@op1"
        assert committed["tx_type"] == "IPFS_PIN_CONFIRM"
        assert on_follower == committed
    log = follower.log()
    assert "operator transaction submitted type=IPFS_PIN_HEAL" not in log
    assert "heal submitted" not in log


def _submit_founder(
    via: Node, chain: BuiltChain, tx_type: str, payload: dict[str, Any]
) -> str:
    nonce = via.get("/v1/accounts/@founder").json()["next_nonce"]
    envelope = build_envelope(
        chain.founder,
        chain_id="weall-dev",
        tx_type=tx_type,
        signer="@founder",
        nonce=nonce,
        payload=payload,
    )
    response = via.post("/v1/tx/submit", json=envelope)
    assert response.status_code == 202, response.text
    return str(response.json()["tx_id"])


def test_upload_to_follower_needs_own_pin_request(
    tmp_path: Path, chain: BuiltChain, producer: Node
) -> None:
    session = keys.generate()
    expires = int(time.time() * 1000) + 3_600_000
    issued = _submit_founder(
        producer,
        chain,
        "ACCOUNT_SESSION_KEY_ISSUE",
        {
            "pubkey": session.pubkey,
            "scope": ["IPFS_PIN_REQUEST"],
            "expires_at_ms": expires,
        },
    )
    _committed(producer, issued)
    follower = start(follower_node(tmp_path / "follower", producer, chain.genesis_path))
    try:
        _committed(follower, issued)
        body = b"bytes uploaded to a follower"
        response = follower.post(
            "/v1/media/upload",
            content=body,
            headers={
                "Content-Type": "text/plain",
                **session_headers(session, "@founder", body),
            },
        )
        upload = response.json()
        download = follower.get(f"/v1/media/{upload['cid']}")
        # The uploader requests the pin itself, through the follower.
        request = _submit_founder(
            follower,
            chain,
            "IPFS_PIN_REQUEST",
            {"cid": upload["cid"], "size_bytes": len(body)},
        )
        receipt = _committed(follower, request)["receipt"]
        pin = follower.get(f"/v1/media/{upload['cid']}/status")
    finally:
        follower.stop()

    assert response.status_code == 200, response.text
    assert upload["size_bytes"] == len(body)
    assert upload["pin_request_error"]["code"] == "role_required"
    assert "pin_request_tx_id" not in upload
    assert download.status_code == 200
    assert download.content == body
    assert receipt["ok"] is True
    assert pin.status_code == 200
    assert pin.json()["owner"] == "@founder"
