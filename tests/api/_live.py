"""Helpers for the api tests that run against a live node.

``populate`` fills a fresh dev node with one object of every kind (post,
comment, group, proposal, dispute, PoH request, pin) through signed
transactions, and returns their ids. ``stable_state`` reads the parts of the
node's state that only a transaction can change, so a test can show that a
rejected request changed nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import trio
from e2e.node import Node

from weall import ipc
from weall.protocol import keys
from weall.protocol.envelope import build_envelope

__all__ = [
    "CID",
    "World",
    "batch",
    "envelope",
    "next_nonce",
    "pool_size",
    "populate",
    "stable_state",
    "submit",
    "wait_for",
    "wait_status",
]

T = TypeVar("T")

# The CIDv1 of the empty raw block; a pin request only needs a well-formed CID.
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
FINAL = ("committed", "rejected", "expired")


@dataclass
class World:
    """A live node with its keys and the ids of the objects ``populate`` made."""

    node: Node
    chain_id: str
    founder: keys.KeyPair
    producer: keys.KeyPair
    alice: keys.KeyPair
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Any:
        return self.node.workdir / "data"


def wait_for(
    predicate: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.1
) -> T:
    """Poll ``predicate`` until it returns a true value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def envelope(
    world: World,
    key: keys.KeyPair,
    tx_type: str,
    payload: dict[str, Any],
    nonce: int,
    *,
    signer: str | None = None,
    chain_id: str | None = None,
) -> dict[str, Any]:
    return build_envelope(
        key,
        chain_id=chain_id or world.chain_id,
        tx_type=tx_type,
        signer=signer or str(key.account),
        nonce=nonce,
        payload=payload,
    )


def submit(node: Node, document: Any) -> httpx.Response:
    return node.post("/v1/tx/submit", json=document)


def batch(node: Node, documents: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    response = node.post("/v1/tx/batch", json={"envelopes": list(documents)})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def next_nonce(node: Node, account: str) -> int:
    response = node.get(f"/v1/accounts/{account}")
    assert response.status_code == 200, response.text
    return int(response.json()["next_nonce"])


def wait_status(node: Node, tx_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until ``tx_id`` is committed, rejected or expired; return its status."""

    def final() -> dict[str, Any] | None:
        response = node.get(f"/v1/tx/{tx_id}")
        if response.status_code != 200:
            return None
        document: dict[str, Any] = response.json()
        return document if document["status"] in FINAL else None

    return wait_for(final, timeout)


def commit_all(node: Node, documents: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submit a batch, wait for every transaction and return the receipts."""
    results = batch(node, documents)
    for result in results:
        assert result["http_status"] == 202, result
    receipts = []
    for result in results:
        status = wait_status(node, result["tx_id"])
        assert status["status"] == "committed", status
        assert status["receipt"]["ok"], status
        receipts.append(status["receipt"])
    return receipts


def pool_size(node: Node) -> int:
    """Return the producer's pool size, read over the producer socket."""

    async def ask() -> int:
        async with ipc.open_client(node.run_dir / "producer.sock") as client:
            answer = await client.call("status", timeout=20.0)
        return int(answer["pool_size"])

    return trio.run(ask)


def stable_state(world: World) -> dict[str, Any]:
    """Read what only a transaction changes: counts, params, accounts, pool, feed.

    Height, tip and state root move with heartbeat blocks, so they are left out.
    """
    node = world.node
    snapshot = node.get("/v1/state/snapshot").json()
    for moving in ("height", "tip_hash", "state_root", "economics"):
        snapshot.pop(moving)
    accounts = {
        name: node.get(f"/v1/accounts/{name}").json()
        for name in ("@founder", "@node", "@alice")
    }
    return {
        "snapshot": snapshot,
        "accounts": accounts,
        "pool_size": pool_size(node),
        "feed": node.get("/v1/feed").json(),
    }


def populate(node: Node) -> World:
    """Create one object of every kind on a fresh dev node and return the world."""
    data = node.workdir / "data"
    world = World(
        node=node,
        chain_id=node.get("/v1/state/snapshot").json()["chain_id"],
        founder=keys.load_key_file(data / "keys" / "founder.key"),
        producer=keys.load_key_file(data / "keys" / "node.key"),
        alice=keys.generate("@alice"),
    )
    founder_nonce = next_nonce(node, "@founder")
    node_nonce = next_nonce(node, "@node")
    first = commit_all(
        node,
        [
            envelope(
                world,
                world.founder,
                "CONTENT_POST_CREATE",
                {"body": "hello"},
                founder_nonce,
            ),
            envelope(
                world,
                world.founder,
                "GROUP_CREATE",
                {"group_id": "townhall", "name": "Town hall", "policy": "open"},
                founder_nonce + 1,
            ),
            envelope(
                world,
                world.founder,
                "GOV_PROPOSAL_CREATE",
                {
                    "title": "Longer posts",
                    "body": "Raise the limit",
                    "voting_blocks": 500,
                },
                founder_nonce + 2,
            ),
            envelope(
                world,
                world.founder,
                "IPFS_PIN_REQUEST",
                {"cid": CID, "size_bytes": 0},
                founder_nonce + 3,
            ),
            envelope(world, world.alice, "ACCOUNT_REGISTER", {}, 0),
            envelope(
                world,
                world.producer,
                "CONTENT_POST_CREATE",
                {"body": "from the node"},
                node_nonce,
            ),
        ],
    )
    world.ids.update(
        post=first[0]["post_id"],
        group="townhall",
        proposal=first[2]["proposal_id"],
        pin=first[3]["pin_id"],
        cid=CID,
        node_post=first[5]["post_id"],
    )
    second = commit_all(
        node,
        [
            envelope(
                world,
                world.founder,
                "CONTENT_COMMENT_CREATE",
                {"parent_id": world.ids["post"], "body": "first comment"},
                founder_nonce + 4,
            ),
            envelope(
                world, world.alice, "POH_ASYNC_REQUEST_OPEN", {"evidence_cid": CID}, 1
            ),
            envelope(
                world,
                world.producer,
                "DISPUTE_OPEN",
                {"target_id": world.ids["node_post"], "reason": "test dispute"},
                node_nonce + 1,
            ),
        ],
    )
    world.ids.update(
        comment=second[0]["comment_id"],
        poh_request=second[1]["request_id"],
        dispute=second[2]["dispute_id"],
    )
    _wait_pinner_settled(world)
    return world


def _wait_pinner_settled(world: World) -> None:
    """Wait for the pinner's confirmation of the pin, so no later test sees it land."""
    path = f"/v1/pins/{world.ids['pin']}"
    # A pinner that never confirms leaves nothing pending either, so a timeout is fine.
    with contextlib.suppress(AssertionError):
        wait_for(
            lambda: all(
                t["confirmation"] for t in world.node.get(path).json()["targets"]
            ),
            5.0,
        )
    wait_for(lambda: pool_size(world.node) == 0)
