"""Media with the kubo backend, against the IPFS test daemon (``WEALL_TEST_IPFS_API``).

``scripts/run-tests.sh`` starts the daemon inside a loopback-only network
namespace and exports its URL; without it these tests are skipped. The
daemon is shared by the whole run, so every test uploads bytes of its own
and looks only for their CID in the daemon's pin list.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import trio
from e2e.node import Node

from weall.ipfs import KuboBackend
from weall.ipfs.unixfs import compute_cid

from ._support import Chain, wait_for, write_chain

# Read at import, before the fixture that clears WEALL_* variables runs.
IPFS_API: Final = os.environ.get("WEALL_TEST_IPFS_API", "")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ipfs,
    pytest.mark.skipif(
        not IPFS_API, reason="WEALL_TEST_IPFS_API is not set; run scripts/run-tests.sh"
    ),
]

NODE_ENV = {
    "WEALL_BLOCK_INTERVAL_MS": "200",
    "WEALL_IPFS_BACKEND": "kubo",
    "WEALL_IPFS_API_URL": IPFS_API,
    "WEALL_PINNER_POLL_S": "0.2",
    "WEALL_RATE_LIMIT_PER_S": "0",
}


def _unique_bytes(size: int = 50_000) -> bytes:
    # Unique per run, so an earlier run's pin in the shared daemon never counts.
    return random.Random(os.urandom(16)).randbytes(size)


def _kubo_pins(cid: str) -> tuple[bool, bool, bool]:
    """Return whether the daemon has the block of ``cid``, pins it, and lists it among its pins."""

    async def ask() -> tuple[bool, bool, bool]:
        async with KuboBackend(IPFS_API, timeout_s=30.0, stat_timeout_s=2.0) as kubo:
            return (
                await kubo.has(cid),
                await kubo.is_pinned(cid),
                cid in await kubo.list_pins(),
            )

    return trio.run(ask)


def _start(workdir: Path, env: dict[str, str], args: list[str] | None = None) -> Chain:
    chain = write_chain(workdir, {"@alice": (2, [])}, {"heartbeat_ms": 500})
    node = Node(workdir, env=env, args=args)
    chain.node = node
    node.start()
    node.wait_ready(timeout=90.0)
    return chain


@pytest.fixture
def chains() -> Iterator[list[Chain]]:
    started: list[Chain] = []
    yield started
    for chain in started:
        node = chain.node
        if (
            node is not None
            and node.process is not None
            and node.process.poll() is None
        ):
            node.stop()


def test_pin_on_upload_pins_in_kubo(tmp_path: Path, chains: list[Chain]) -> None:
    env = {
        **NODE_ENV,
        "WEALL_IPFS_PIN_ON_UPLOAD": "1",
        "WEALL_MEDIA_AUTO_PIN_REQUEST": "0",
    }
    chain = _start(tmp_path, env)
    chains.append(chain)
    session = chain.issue_session("@alice", ["IPFS_PIN_REQUEST"])
    body = _unique_bytes()

    response = chain.upload(session, "@alice", body, "audio/ogg")

    assert response.status_code == 200, response.text
    document = response.json()
    assert document == {"cid": compute_cid(body), "size_bytes": len(body)}
    assert _kubo_pins(document["cid"]) == (True, True, True)
    assert chain.node is not None
    download = chain.node.get(f"/v1/media/{document['cid']}")
    assert download.status_code == 200
    assert download.content == body
    assert download.headers["content-type"] == "audio/ogg"


def test_upload_unpinned_until_pinner_confirms(
    tmp_path: Path, chains: list[Chain]
) -> None:
    env = {**NODE_ENV, "WEALL_IPFS_PIN_ON_UPLOAD": "0"}
    # Without its pinner, nothing but the upload itself touches the daemon.
    chain = _start(tmp_path, env, ["--actors", "producer,checkpointer,healer,api"])
    chains.append(chain)
    assert chain.node is not None
    node = chain.node
    session = chain.issue_session("@alice", ["IPFS_PIN_REQUEST"])
    body = _unique_bytes()

    upload = chain.upload(session, "@alice", body).json()
    chain.wait_tx(upload["pin_request_tx_id"])

    cid = upload["cid"]
    assert _kubo_pins(cid) == (True, False, False)
    pending = chain.status(cid)
    assert pending is not None
    assert pending["targets"][0]["state"] == "pending"

    # The node's own pinner, run on its own, reads the database and confirms
    # through the producer, which signs for @node.
    pinner = subprocess.Popen(
        [sys.executable, "-m", "weall", "actor", "pinner"],
        cwd=tmp_path,
        env=node.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        durable = wait_for(
            lambda: (s := chain.status(cid)) is not None and s["durable"] and s, 60
        )
    finally:
        pinner.terminate()
        pinner.wait(20)
    assert durable["targets"][0]["operator"] == "@node"
    assert _kubo_pins(cid) == (True, True, True)
