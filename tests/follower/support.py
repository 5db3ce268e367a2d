"""Producer and follower nodes on loopback, and the checks the follower tests share."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import orjson
import trio

from tests.e2e.node import Node
from tests.media._support import session_headers
from weall import ipc
from weall.protocol import keys

__all__ = [
    "READ_ROUTES",
    "committed_heights",
    "follower_node",
    "follower_status",
    "head_height",
    "same_reads",
    "socket_call",
    "start",
    "upload_media",
    "wait_for",
    "wait_synced",
]

T = TypeVar("T")

# Read routes compared between a producer and its followers; ``{post}`` and
# ``{tx}`` are filled in by the test.
READ_ROUTES = (
    "/v1/chain/head",
    "/v1/blocks/0",
    "/v1/blocks/1",
    "/v1/blocks?from=0&limit=100",
    "/v1/accounts/@founder",
    "/v1/accounts/@founder/posts",
    "/v1/feed",
    "/v1/content/{post}",
    "/v1/tx/{tx}",
    "/v1/state/snapshot",
)


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    condition: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a true value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{condition} not met within {timeout} s")


def start(node: Node, timeout: float = 90.0) -> Node:
    node.start()
    node.wait_ready(timeout)
    return node


class Upstream(Protocol):
    """A node, or a proxy in front of one: anything with a base URL."""

    @property
    def url(self) -> str: ...


def follower_node(
    workdir: Path,
    upstream: Upstream,
    genesis: Path,
    *,
    actors: str | None = "follower,api",
    env: dict[str, str] | None = None,
) -> Node:
    """A follower of ``upstream`` in ``workdir``, with a copy of its genesis document."""
    workdir.mkdir(parents=True, exist_ok=True)
    copy = workdir / "genesis.json"
    shutil.copy(genesis, copy)
    settings = {
        "WEALL_UPSTREAM_URL": upstream.url,
        "WEALL_GENESIS_PATH": str(copy),
        "WEALL_CHAIN_ID": orjson.loads(copy.read_bytes())["chain_id"],
        **(env or {}),
    }
    return Node(workdir, env=settings, args=["--actors", actors] if actors else [])


def head_height(node: Node) -> int:
    try:
        response = node.get("/v1/chain/head")
    except httpx.HTTPError:
        return -1
    return int(response.json()["height"]) if response.status_code == 200 else -1


def wait_synced(follower: Node, upstream: Node, *, timeout: float = 90.0) -> int:
    """Wait until ``follower`` has the upstream's tip; return that height."""

    # The height is wrapped in a tuple, because height 0 is a valid result
    # but not a true value for wait_for.
    def synced() -> tuple[int] | None:
        target = head_height(upstream)
        reached = head_height(follower)
        return (target,) if target >= 0 and reached == target else None

    (height,) = wait_for(
        synced, timeout=timeout, condition="follower at the upstream's height"
    )
    return height


def same_reads(
    producer: Node,
    follower: Node,
    routes: Iterable[str],
    *,
    attempts: int = 5,
    statuses: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Compare the JSON of ``routes`` on both nodes at one height; return the producer's.

    Each route must return 200 on the producer, or the status that
    ``statuses`` gives it, and the follower must answer the same status and
    the same JSON. The producer may commit a block (a heartbeat) during the
    comparison, so it is repeated until both heads are equal before and
    after the reads.
    """
    expected = statuses or {}
    for _ in range(attempts):
        height = wait_synced(follower, producer)
        documents = {
            route: (producer.get(route), follower.get(route)) for route in routes
        }
        if head_height(producer) != height or head_height(follower) != height:
            continue
        for route, (left, right) in documents.items():
            assert left.status_code == expected.get(route, 200), (route, left.text)
            assert right.status_code == left.status_code, (route, right.text)
            assert right.json() == left.json(), route
        return {route: left.json() for route, (left, _) in documents.items()}
    raise AssertionError("the producer kept moving during the comparison")


def upload_media(
    node: Node, session: keys.KeyPair, body: bytes, account: str = "@founder"
) -> dict[str, Any]:
    """Upload ``body`` as text to ``node``, signed by ``account``'s ``session`` key."""
    response = node.post(
        "/v1/media/upload",
        content=body,
        headers={
            "Content-Type": "text/plain",
            **session_headers(session, account, body),
        },
    )
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def follower_status(node: Node) -> dict[str, Any]:
    """Call the ``status`` operation of the node's follower actor over its socket."""

    async def call() -> dict[str, Any]:
        async with ipc.open_client(node.run_dir / "producer.sock") as client:
            return await client.call("status", timeout=10.0)

    return trio.run(call)


def socket_call(node: Node, op: str, **fields: Any) -> dict[str, Any]:
    """Send one request to the node's producer socket (its follower actor) and return the reply."""

    async def call() -> dict[str, Any]:
        async with ipc.open_client(node.run_dir / "producer.sock") as client:
            return await client.call(op, timeout=30.0, **fields)

    return trio.run(call)


def committed_heights(db: Path) -> list[int]:
    """Heights of the blocks in ``db``, read through a read-only connection."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [
            row[0] for row in conn.execute("SELECT height FROM blocks ORDER BY height")
        ]
    finally:
        conn.close()
