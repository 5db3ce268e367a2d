"""A follower as a storage operator: its own key, its own pinner and healer, one writer.

The operator account @op1 enrolls with ``STORAGE_OPERATOR_ENROLL`` on the
producer's chain. The follower runs with @op1's key, and its pinner pins
what the chain assigns to @op1 and confirms it, signed by @op1.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.node import Node
from weall.protocol import keys
from weall.protocol.envelope import build_envelope

from .chain_builder import BuiltChain, account_key, write_chain_files
from .support import (
    follower_node,
    socket_call,
    start,
    upload_media,
    wait_for,
    wait_synced,
)

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
            "roles": [],
            "balance": 0,
        }
    ]
    # Two replicas, so that a pin is assigned to @node and to @op1 once @op1
    # has enrolled.
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
        enroll = build_envelope(
            account_key("@op1"),
            chain_id="weall-dev",
            tx_type="STORAGE_OPERATOR_ENROLL",
            signer="@op1",
            nonce=node.get("/v1/accounts/@op1").json()["next_nonce"],
            payload={"capacity_bytes": 1 << 30},
        )
        response = node.post("/v1/tx/submit", json=enroll)
        assert response.status_code == 202, response.text
        _committed(node, response.json()["tx_id"])
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


def _issue_session(producer: Node, chain: BuiltChain) -> keys.KeyPair:
    """Give @founder a session key that may upload; return it once committed."""
    session = keys.generate()
    issued = _submit_founder(
        producer,
        chain,
        "ACCOUNT_SESSION_KEY_ISSUE",
        {
            "pubkey": session.pubkey,
            "scope": ["IPFS_PIN_REQUEST"],
            "expires_at_ms": int(time.time() * 1000) + 3_600_000,
        },
    )
    _committed(producer, issued)
    return session


def _confirmation(node: Node, pin_id: str, ok: bool) -> dict[str, Any] | None:
    """Return @op1's target of the pin once it is confirmed with the given ``ok``."""
    pin = node.get(f"/v1/pins/{pin_id}").json()
    target: dict[str, Any] = next(t for t in pin["targets"] if t["operator"] == "@op1")
    confirmation = target["confirmation"]
    return target if confirmation is not None and confirmation["ok"] is ok else None


def _confirm_tx(log: str, pin_id: str, ok: bool) -> str | None:
    """Return the tx id of the pinner's confirmation of ``pin_id`` from its log."""
    pattern = rf"pin confirm submitted pin_id={pin_id} cid=\S+ ok={ok} tx_id=(\S+)"
    found = re.search(pattern, log)
    return found.group(1) if found else None


def _wait_confirmed(
    producer: Node, follower: Node, pin_id: str, *, ok: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait for the follower pinner's confirmation; return @op1's target and its tx."""
    target = wait_for(
        lambda: _confirmation(producer, pin_id, ok),
        condition=f"the follower's pinner confirms ok={ok} on the producer",
    )
    tx_id = wait_for(
        lambda: _confirm_tx(follower.log(), pin_id, ok),
        condition=f"the pinner logs its confirmation ok={ok}",
    )
    return target, _committed(producer, tx_id)


def _block_envelope(node: Node, tx_id: str, height: int) -> dict[str, Any]:
    block = node.get(f"/v1/blocks/{height}").json()
    entry = next(tx for tx in block["txs"] if tx["tx_id"] == tx_id)
    envelope: dict[str, Any] = entry["envelope"]
    return envelope


def test_follower_pinner_confirms_its_pins(
    tmp_path: Path, chain: BuiltChain, producer: Node
) -> None:
    operator = account_key("@op1")
    key_path = tmp_path / "op1.key"
    keys.write_key_file(key_path, operator)
    follower = follower_node(
        tmp_path / "follower",
        producer,
        chain.genesis_path,
        actors=None,
        env={
            "WEALL_NODE_KEY_PATH": str(key_path),
            "WEALL_IPFS_HEAL_INTERVAL_BLOCKS": "1",
            "WEALL_PINNER_POLL_S": "0.2",
            "WEALL_PIN_RECHECK_S": "1",
        },
    )
    session = _issue_session(producer, chain)
    start(follower)
    try:
        wait_synced(follower, producer)
        actors = json.loads((follower.run_dir / "actors.json").read_text())

        # The content is in the follower's own store, where its pinner finds it.
        upload = upload_media(
            follower, session, b"content that the follower's pinner pins"
        )
        request = _submit_founder(
            follower,
            chain,
            "IPFS_PIN_REQUEST",
            {"cid": upload["cid"], "size_bytes": upload["size_bytes"]},
        )
        pin_id = str(_committed(producer, request)["receipt"]["pin_id"])
        confirmed, ok_status = _wait_confirmed(producer, follower, pin_id, ok=True)
        ok_tx = ok_status["tx_id"]
        ok_envelope = _block_envelope(producer, ok_tx, ok_status["height"])
        ok_on_follower = _committed(follower, ok_tx)

        # The pin disappears from the follower's store: the pinner's next
        # check reports the loss, and the follower's healer logs the shortfall.
        pin_file = tmp_path / "follower" / "data" / "ipfs" / "pins" / upload["cid"]
        assert pin_file.is_file()
        pin_file.unlink()
        lost, lost_status = _wait_confirmed(producer, follower, pin_id, ok=False)
        wait_for(
            lambda: f"pin shortfall pin_id={pin_id}" in follower.log(),
            condition="the follower's healer logs the shortfall",
        )
        heal = socket_call(
            follower, "system_tx", tx_type="IPFS_PIN_HEAL", payload={"pin_id": pin_id}
        )
        db = (tmp_path / "follower" / "data" / "weall.db").resolve()
        pids = follower.actor_pids()
        modes = {name: _access_modes(pid, db) for name, pid in pids.items()}
    finally:
        follower.stop()
    on_producer = producer.get(f"/v1/pins/{pin_id}").json()

    assert sorted(actors) == sorted(FOLLOWER_ACTORS)
    assert all(info["state"] == "running" for info in actors.values())
    assert upload["pin_request_error"]["code"] == "role_required"
    assert confirmed["state"] == "ok"
    assert ok_status["tx_type"] == "IPFS_PIN_CONFIRM"
    assert ok_status["signer"] == "@op1"
    assert ok_status["receipt"]["ok"] is True
    assert ok_envelope["signer"] == "@op1"
    assert ok_envelope["pubkey"] == operator.pubkey
    assert ok_envelope["payload"] == {"pin_id": pin_id, "ok": True}
    assert ok_on_follower == ok_status
    assert lost["state"] == "failed"
    assert lost_status["signer"] == "@op1"
    assert lost_status["receipt"]["ok"] is True
    assert on_producer["shortfall"] is True
    assert heal["ok"] is False
    assert heal["error"]["code"] == "role_required"
    assert modes["follower"], "the follower actor holds the database open"
    assert all(mode == os.O_RDWR for mode in modes["follower"])
    assert modes["healer"], "the healer read the database"
    assert modes["api"], "the api read the database"
    for name in ("checkpointer", "pinner", "healer", "api"):
        assert all(mode == os.O_RDONLY for mode in modes[name]), name
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
    session = _issue_session(producer, chain)
    follower = start(follower_node(tmp_path / "follower", producer, chain.genesis_path))
    try:
        wait_synced(follower, producer)
        body = b"bytes uploaded to a follower"
        upload = upload_media(follower, session, body)
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

    assert upload["size_bytes"] == len(body)
    assert upload["pin_request_error"]["code"] == "role_required"
    assert "pin_request_tx_id" not in upload
    assert download.status_code == 200
    assert download.content == body
    assert receipt["ok"] is True
    assert pin.status_code == 200
    assert pin.json()["owner"] == "@founder"
