"""Fixtures of the dashboard tests: one live node shared by this package.

The node runs with a short block interval and no rate limit, because the
browser polls several routes every 2 s. ``live`` gives it a few committed
posts, a comment, a pin request that no operator can confirm, an upload
whose pin the node's pinner confirmed, and a backup before any test runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from e2e.node import Node

from tests.follower.support import upload_media
from weall.protocol import keys

T = TypeVar("T")

LIVE_ENV = {
    "WEALL_RATE_LIMIT_PER_S": "0",
    "WEALL_BLOCK_INTERVAL_MS": "200",
}
# The CIDv1 of the empty raw block; a pin request only needs a well-formed CID.
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
UPLOAD = b"uploaded bytes whose pin the node's own pinner confirms"
# A post body that would be markup if the page inserted it as HTML.
MARKUP_BODY = '<b id="injected">bold</b> & <img src=x onerror="alert(1)"> "quoted"'


@dataclass
class Live:
    """The shared node and the ids of what ``populate`` created."""

    node: Node
    ids: dict[str, str] = field(default_factory=dict)


def wait_for(
    predicate: Callable[[], T | None], timeout: float = 30.0, what: str = "condition"
) -> T:
    """Poll ``predicate`` every 0.1 s until it returns a true value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.1)


def post(node: Node, body: str, *, wait: bool = True) -> str:
    """Submit a founder post with ``weall tx post``; return its tx id."""
    result = node.tx("post", body, wait=wait)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[0]


def _receipt(node: Node, *args: str) -> dict[str, object]:
    result = node.tx(*args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    document: dict[str, object] = json.loads(lines[1])
    document["tx_id"] = lines[0].split()[0]
    return document


def populate(node: Node) -> Live:
    live = Live(node)
    live.ids["post"] = post(node, "first post from the founder")
    live.ids["markup_post"] = post(node, MARKUP_BODY)
    comment = _receipt(node, "comment", live.ids["post"], "a comment on the first post")
    live.ids["comment"] = str(comment["tx_id"])
    pin = _receipt(
        node, "raw", "IPFS_PIN_REQUEST", json.dumps({"cid": CID, "size_bytes": 0})
    )
    live.ids["pin"] = str(pin["tx_id"])
    live.ids["confirmed_pin"], live.ids["confirmed_cid"] = _confirmed_upload(node)
    node.cli("backup", check=True)
    return live


def _confirmed_upload(node: Node) -> tuple[str, str]:
    """Upload bytes as @founder; return the pin id and CID once the pinner confirmed it."""
    session = keys.generate()
    payload = {
        "pubkey": session.pubkey,
        "scope": ["IPFS_PIN_REQUEST"],
        "expires_at_ms": int(time.time() * 1000) + 3_600_000,
    }
    _receipt(node, "raw", "ACCOUNT_SESSION_KEY_ISSUE", json.dumps(payload))
    upload = upload_media(node, session, UPLOAD)
    pin_id = str(upload["pin_request_tx_id"])

    def confirmed() -> bool:
        pin = node.get(f"/v1/pins/{pin_id}")
        return pin.status_code == 200 and all(
            target["confirmation"] is not None and target["confirmation"]["ok"]
            for target in pin.json()["targets"]
        )

    wait_for(confirmed, timeout=60.0, what="the pinner's confirmation of the upload")
    return pin_id, str(upload["cid"])


@pytest.fixture(scope="package")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    node = Node(tmp_path_factory.mktemp("dashboard-node"), env=dict(LIVE_ENV))
    node.start()
    try:
        node.wait_ready(timeout=90.0)
        yield populate(node)
    finally:
        if node.process is not None and node.process.poll() is None:
            node.stop()
