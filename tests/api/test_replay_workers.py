"""The session replay cache across api processes and api restarts, on a live node.

The node runs two api workers (``WEALL_API_WORKERS=2``) that share one port
through SO_REUSEPORT, so the kernel spreads new connections over both. One
signed upload is accepted once. The same request sent again on new
connections is rejected by whichever worker takes it, and still after both
workers restart. The access log lines carry each worker's pid, which shows
that both workers rejected it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e.node import Node

from weall.protocol import keys
from weall.protocol.encoding import hash_bytes

from ._live import wait_for

pytestmark = pytest.mark.slow

UPLOAD = "/v1/media/upload"
NODE_ENV = {
    "WEALL_API_WORKERS": "2",
    "WEALL_RATE_LIMIT_PER_S": "0",
    "WEALL_BLOCK_INTERVAL_MS": "200",
}
# Each new connection goes to either worker with about even odds, so 60
# tries miss one worker with a probability of about 2^-59.
MAX_TRIES = 60
_ACCESS_LINE = re.compile(r"pid=(\d+) weall\.api\.access: POST /v1/media/upload (\d+) ")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    node = Node(tmp_path_factory.mktemp("replay-workers"), env=dict(NODE_ENV))
    node.start()
    try:
        node.wait_ready(timeout=90.0)
        yield node
    finally:
        if node.process is not None and node.process.poll() is None:
            node.stop()
    assert "Traceback" not in node.log(), node.log()[-5000:]


def _api_pids(node: Node) -> set[int]:
    pids = node.actor_pids()
    return {pids["api"], pids["api-2"]}


def _issue_session(node: Node) -> keys.KeyPair:
    session = keys.generate("@founder")
    payload = {
        "pubkey": session.pubkey,
        "scope": ["IPFS_PIN_REQUEST"],
        "expires_at_ms": int(time.time() * 1000) + 3_600_000,
    }
    result = node.tx("raw", "ACCOUNT_SESSION_KEY_ISSUE", json.dumps(payload))
    assert result.returncode == 0, result.stderr
    return session


def _signed(session: keys.KeyPair, body: bytes) -> dict[str, str]:
    timestamp = int(time.time() * 1000)
    lines = ("weall/request/v1", "POST", UPLOAD, str(timestamp), hash_bytes(body))
    return {
        "X-WeAll-Account": "@founder",
        "X-WeAll-Session-Key": session.pubkey,
        "X-WeAll-Timestamp": str(timestamp),
        "X-WeAll-Signature": session.sign("\n".join(lines).encode("utf-8")),
        "Content-Type": "application/octet-stream",
    }


def _send(node: Node, headers: dict[str, str], body: bytes) -> httpx.Response:
    # A client of its own per request, so each request is a new connection.
    with httpx.Client(timeout=30.0) as client:
        return client.post(f"{node.url}{UPLOAD}", content=body, headers=headers)


def _rejecting_pids(log_text: str) -> set[int]:
    return {
        int(pid) for pid, status in _ACCESS_LINE.findall(log_text) if status == "401"
    }


def _replay_until_both_workers_reject(
    node: Node, headers: dict[str, str], body: bytes
) -> None:
    workers = _api_pids(node)
    start = len(node.log())
    for _ in range(MAX_TRIES):
        response = _send(node, headers, body)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "session_replay"
        if workers <= _rejecting_pids(node.log()[start:]):
            return
    # The access lines may trail the responses a little.
    wait_for(lambda: workers <= _rejecting_pids(node.log()[start:]), timeout=30.0)


def test_replay_rejected_by_every_worker_and_after_restart(node: Node) -> None:
    session = _issue_session(node)
    body = b"one upload, signed once"
    headers = _signed(session, body)

    first = _send(node, headers, body)
    assert first.status_code == 200, first.text
    _replay_until_both_workers_reject(node, headers, body)

    before = _api_pids(node)
    for actor in ("api", "api-2"):
        node.cli("restart", actor, check=True, timeout=120.0)
    node.wait_ready(timeout=90.0)
    assert _api_pids(node).isdisjoint(before)
    _replay_until_both_workers_reject(node, headers, body)

    # A new signature is still accepted after the restart.
    fresh = _send(node, _signed(session, body), body)
    assert fresh.status_code == 200, fresh.text


def test_replay_cache_file_in_run_dir(node: Node) -> None:
    path: Path = node.run_dir / "session-replay.db"
    assert path.is_file()
    assert not (node.workdir / "data" / "session-replay.db").exists()
