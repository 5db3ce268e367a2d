"""End to end: a node, three standalone pinners, a lost replica and the healer.

The producer account ``@node`` is no storage operator here, so every pin
goes to the three operator accounts, each served by its own
``weall actor pinner`` process with its own key and local store, reading the
node over HTTP. With a replication factor of 2, one pinner's store is
deleted and its pinner reports the loss. The healer then reassigns the pin
to the third operator within the bound of the healer's docstring, and the
third pinner fetches the content from the node and confirms it.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
from e2e.node import Node

from weall.ipfs.unixfs import compute_cid

from ._support import Chain, Pinner, wait_for, write_chain

pytestmark = pytest.mark.slow

OPERATORS = ("@op_a", "@op_b", "@op_c")
HEAL_INTERVAL = 5
BLOCK_MS = 500
# One head poll of the healer plus one round is far below a block here, so
# the healer's docstring bound is h + HEAL_INTERVAL + 1.
HEAL_BOUND_BLOCKS = HEAL_INTERVAL + 1
# The new target's pinner polls every 0.2 s and its confirmation needs one
# block; a loaded machine gets two more blocks of slack.
CONFIRM_BOUND_BLOCKS = 3
PINNER_ENV = {"WEALL_PINNER_POLL_S": "0.2", "WEALL_PIN_RECHECK_S": "0.5"}
NODE_ENV = {
    "WEALL_BLOCK_INTERVAL_MS": str(BLOCK_MS),
    "WEALL_IPFS_HEAL_INTERVAL_BLOCKS": str(HEAL_INTERVAL),
    "WEALL_PINNER_POLL_S": "0.2",
    "WEALL_RATE_LIMIT_PER_S": "0",
}


@pytest.fixture
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    workdir = tmp_path_factory.mktemp("heal-node")
    accounts = {name: (2, []) for name in OPERATORS} | {"@alice": (2, [])}
    params = {
        "heartbeat_ms": BLOCK_MS,
        "replication_factor": 2,
        "pin_confirm_timeout_blocks": 100_000,
    }
    chain = write_chain(workdir, accounts, params, producer_roles=("producer",))
    node = Node(workdir, env=NODE_ENV)
    chain.node = node
    node.start()
    try:
        node.wait_ready(timeout=90.0)
        yield chain
    finally:
        if node.process is not None and node.process.poll() is None:
            node.stop()
    assert "Traceback" not in node.log(), node.log()[-5000:]


@pytest.fixture
def pinners(chain: Chain) -> Iterator[dict[str, Pinner]]:
    started = {name: Pinner(chain, name, PINNER_ENV) for name in OPERATORS}
    for pinner in started.values():
        pinner.start()
    try:
        yield started
    finally:
        for pinner in started.values():
            pinner.stop()


def _expected_targets(request_id: str, eligible: list[str], count: int) -> list[str]:
    """The assignment rule: start at SHA-256(request id text)[:8] mod n, take count, wrap."""
    seed = hashlib.sha256(request_id.encode("ascii")).digest()
    start = int.from_bytes(seed[:8], "big") % len(eligible)
    return [eligible[(start + i) % len(eligible)] for i in range(count)]


def _node(chain: Chain) -> Node:
    assert chain.node is not None
    return chain.node


def _heal_heights(chain: Chain, pin_id: str, start: int) -> list[int]:
    heights = []
    cursor = start
    while True:
        page = _node(chain).get(f"/v1/blocks?from={cursor}&limit=100").json()
        if not page["blocks"]:
            return heights
        for block in page["blocks"]:
            for tx in block["txs"]:
                envelope = tx["envelope"]
                if (
                    envelope["tx_type"] == "IPFS_PIN_HEAL"
                    and envelope["payload"]["pin_id"] == pin_id
                ):
                    assert tx["receipt"]["ok"], tx
                    heights.append(block["height"])
        cursor = page["next_from"]


def _durable(chain: Chain, cid: str, operators: set[str]) -> dict[str, Any] | None:
    status = chain.status(cid)
    if status is None or not status["durable"]:
        return None
    return status if {t["operator"] for t in status["targets"]} == operators else None


def test_lost_replica_healed_within_bound(
    chain: Chain, pinners: dict[str, Pinner]
) -> None:
    for name in OPERATORS:
        chain.commit(name, "STORAGE_OPERATOR_ENROLL", {"capacity_bytes": 10**9})
    session = chain.issue_session("@alice", ["IPFS_PIN_REQUEST"])
    body = random.Random(7).randbytes(300_000)

    upload = chain.upload(session, "@alice", body, "video/mp4").json()
    pin_id = upload["pin_request_tx_id"]
    cid = upload["cid"]
    assert cid == compute_cid(body)

    # The assignment follows the rule, read through the status route.
    expected = _expected_targets(pin_id, sorted(OPERATORS), 2)
    status = wait_for(lambda: chain.status(cid), 30)
    assert [t["operator"] for t in status["targets"]] == expected
    spare = next(name for name in OPERATORS if name not in expected)
    wait_for(lambda: _durable(chain, cid, set(expected)), 60)
    for name in expected:
        assert cid in pinners[name].pinned()
    assert cid not in pinners[spare].pinned()

    # One target's store is lost; its pinner reports it and the healer acts.
    lost_name = expected[0]
    killed_at = time.monotonic()
    shutil.rmtree(pinners[lost_name].store)

    healed = wait_for(lambda: _durable(chain, cid, {expected[1], spare}), 90)
    durable_s = time.monotonic() - killed_at
    heal_heights = _heal_heights(chain, pin_id, 1)
    assert len(heal_heights) == 1
    heal_height = heal_heights[0]
    failed_at = _failure_height_from_blocks(chain, pin_id, lost_name)
    new_target = next(t for t in healed["targets"] if t["operator"] == spare)
    confirmed_at = new_target["confirmation"]["height"]

    assert lost_name not in {t["operator"] for t in healed["targets"]}
    assert new_target["assigned_height"] == heal_height
    assert heal_height - failed_at <= HEAL_BOUND_BLOCKS, (failed_at, heal_height)
    assert confirmed_at - heal_height <= CONFIRM_BOUND_BLOCKS, (
        heal_height,
        confirmed_at,
    )
    assert confirmed_at - failed_at <= HEAL_BOUND_BLOCKS + CONFIRM_BOUND_BLOCKS
    assert cid in pinners[spare].pinned()
    assert f"pin lost pin_id={pin_id} cid={cid}" in pinners[lost_name].log()
    print(
        f"heal bound: failure at {failed_at}, heal at {heal_height} "
        f"(+{heal_height - failed_at} blocks), durable at {confirmed_at} "
        f"(+{confirmed_at - failed_at} blocks), {durable_s:.1f} s after the store was deleted"
    )
    for pinner in pinners.values():
        assert pinner.stop() == 0, pinner.log()
        assert "Traceback" not in pinner.log()


def _failure_height_from_blocks(chain: Chain, pin_id: str, operator: str) -> int:
    """Return the height of the block holding ``operator``'s ok=false confirmation of the pin."""
    cursor = 1
    while True:
        page = _node(chain).get(f"/v1/blocks?from={cursor}&limit=100").json()
        assert page["blocks"], f"no ok=false confirmation of {pin_id} by {operator}"
        for block in page["blocks"]:
            for tx in block["txs"]:
                envelope = tx["envelope"]
                if (
                    envelope["tx_type"] == "IPFS_PIN_CONFIRM"
                    and envelope["signer"] == operator
                    and envelope["payload"] == {"pin_id": pin_id, "ok": False}
                    and tx["receipt"]["ok"]
                ):
                    return int(block["height"])
        cursor = page["next_from"]
