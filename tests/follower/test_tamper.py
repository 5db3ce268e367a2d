"""A follower rejects an upstream that serves an altered block, and commits nothing after it.

The upstream is a real producer node seen through ``TamperProxy``, which
changes one block. Some alterations are re-signed with the producer's own
key, as a forging producer would, so that only the replay can catch them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.node import Node
from weall.protocol.block import block_hash, block_signing_bytes
from weall.protocol.encoding import hash_bytes
from weall.protocol.keys import KeyPair

from .chain_builder import BuiltChain, build_chain
from .support import (
    committed_heights,
    follower_node,
    follower_status,
    start,
    wait_for,
    wait_synced,
)
from .tamper_proxy import TamperProxy

pytestmark = pytest.mark.slow

BAD_HEIGHT = 4
BLOCKS = 6


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> BuiltChain:
    return build_chain(
        tmp_path_factory.mktemp("producer"), posters=6, blocks=BLOCKS, txs_per_block=3
    )


@pytest.fixture(scope="module")
def producer(chain: BuiltChain) -> Iterator[Node]:
    node = start(Node(chain.workdir, args=["--actors", "producer,api"]))
    try:
        yield node
    finally:
        node.stop()


def _resign(block: dict[str, Any], key: KeyPair) -> None:
    block["hash"] = block_hash(block["header"])
    block["sig"] = key.sign(block_signing_bytes(block["header"]))


def _changed_tx(key: KeyPair) -> Callable[[dict[str, Any]], None]:
    def alter(block: dict[str, Any]) -> None:
        block["txs"][0]["envelope"]["payload"]["body"] = (
            "a body its author never signed"
        )

    return alter


def _swapped_order(key: KeyPair) -> Callable[[dict[str, Any]], None]:
    def alter(block: dict[str, Any]) -> None:
        txs = block["txs"]
        txs[0], txs[1] = txs[1], txs[0]
        block["header"]["tx_ids"] = [tx["tx_id"] for tx in txs]
        _resign(block, key)

    return alter


def _bad_signature(key: KeyPair) -> Callable[[dict[str, Any]], None]:
    def alter(block: dict[str, Any]) -> None:
        block["sig"] = key.sign(b"some other bytes")

    return alter


def _changed_state_root(key: KeyPair) -> Callable[[dict[str, Any]], None]:
    def alter(block: dict[str, Any]) -> None:
        block["header"]["state_root"] = hash_bytes(b"a state nobody replayed")
        _resign(block, key)

    return alter


def _changed_receipt(key: KeyPair) -> Callable[[dict[str, Any]], None]:
    def alter(block: dict[str, Any]) -> None:
        block["txs"][0]["receipt"] = {
            "ok": False,
            "code": "invalid_payload",
            "message": "forged",
        }

    return alter


def _unsigned_extra_tx(key: KeyPair) -> Callable[[dict[str, Any]], None]:
    def alter(block: dict[str, Any]) -> None:
        extra = dict(block["txs"][0])
        block["txs"].append(extra)
        block["header"]["tx_ids"].append(extra["tx_id"])
        _resign(block, key)

    return alter


CASES = [
    pytest.param(_changed_tx, "sig does not verify", id="changed-tx"),
    pytest.param(
        _swapped_order,
        "receipts hash does not match a replay",
        id="swapped-order-resigned",
    ),
    pytest.param(
        _bad_signature, "producer signature does not verify", id="bad-signature"
    ),
    pytest.param(
        _changed_state_root,
        "state root does not match a replay",
        id="changed-state-root-resigned",
    ),
    pytest.param(_changed_receipt, "differs from the replay", id="changed-receipt"),
    pytest.param(_unsigned_extra_tx, "appears twice", id="repeated-tx-resigned"),
]


@pytest.mark.parametrize(("make_alter", "reason"), CASES)
def test_follower_rejects_altered_block(
    tmp_path: Path,
    chain: BuiltChain,
    producer: Node,
    make_alter: Callable[[KeyPair], Callable[[dict[str, Any]], None]],
    reason: str,
) -> None:
    with TamperProxy(producer.url, BAD_HEIGHT, make_alter(chain.node)) as proxy:
        follower = follower_node(tmp_path / "follower", producer, chain.genesis_path)
        follower.extra_env["WEALL_UPSTREAM_URL"] = proxy.url
        start(follower)
        try:
            status = wait_for(
                lambda: (s := follower_status(follower))["state"] == "rejected" and s,
                condition="follower rejects the upstream",
            )
            health = follower.get("/health").json()
        finally:
            follower.stop()
    assert proxy.altered >= 1
    assert status["rejected"]["height"] == BAD_HEIGHT
    assert reason in status["rejected"]["reason"]
    assert status["height"] == BAD_HEIGHT - 1
    assert committed_heights(tmp_path / "follower" / "data" / "weall.db") == list(
        range(BAD_HEIGHT)
    )
    assert health["ok"] is False
    assert health["follower"]["state"] == "rejected"
    assert health["height"] == BAD_HEIGHT - 1
    lines = [
        line for line in follower.log().splitlines() if "upstream rejected" in line
    ]
    assert len(lines) == 1, follower.log()
    assert f"height={BAD_HEIGHT}" in lines[0]
    assert reason in lines[0]


def test_follower_rejects_rewritten_history(
    tmp_path: Path, chain: BuiltChain, producer: Node
) -> None:
    follower = follower_node(tmp_path / "follower", producer, chain.genesis_path)
    start(follower)
    try:
        height = wait_synced(follower, producer)
    finally:
        follower.stop()
    # The upstream now serves another version of the follower's tip block,
    # re-signed by the producer: history that it already served, rewritten.
    with TamperProxy(producer.url, height, _changed_state_root(chain.node)) as proxy:
        follower.extra_env["WEALL_UPSTREAM_URL"] = proxy.url
        start(follower)
        try:
            status = wait_for(
                lambda: (s := follower_status(follower))["state"] == "rejected" and s,
                condition="follower rejects the upstream",
            )
        finally:
            follower.stop()
    assert status["rejected"]["height"] == height
    assert "history rewritten" in status["rejected"]["reason"]
    assert status["height"] == height
