"""Stops and restarts of a real node with clients connected: drain, keep-alive, load."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from weall.actors.api import DRAIN_TIMEOUT_S
from weall.protocol import keys
from weall.protocol.envelope import build_envelope

from .node import Node, Submitter, running_node, wait_committed

pytestmark = pytest.mark.slow

ACTORS = ("producer", "checkpointer", "pinner", "healer", "api")
# Blocks every 300 ms, and no rate limit for the test's own clients on loopback.
LOAD_ENV = {
    "WEALL_BLOCK_INTERVAL_MS": "300",
    "WEALL_RATE_LIMIT_PER_S": "100000",
    "WEALL_RATE_LIMIT_BURST": "100000",
}


class HeadReader(threading.Thread):
    """Reads ``GET /v1/chain/head`` in a loop and records each response."""

    def __init__(self, node: Node) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.responses: list[tuple[float, int]] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.node.url, timeout=10.0) as client:
            while not self.stopping.is_set():
                try:
                    response = client.get("/v1/chain/head")
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    time.sleep(0.05)
                    continue
                self.responses.append((time.monotonic(), response.status_code))
                time.sleep(0.005)


def read_response(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response with a Content-Length body from ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed inside the response head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def wait_for_line(node: Node, pattern: str, timeout: float = 20.0) -> None:
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if regex.search(node.log()):
            return
        time.sleep(0.02)
    raise AssertionError(f"no line matched {pattern!r}:\n{node.log()[-3000:]}")


def test_restart_producer_keeps_api(tmp_path: Path) -> None:
    with running_node(tmp_path, env=LOAD_ENV) as node:
        before = node.wait_all_running(ACTORS)
        submitter = Submitter(node, pause_s=0.02)
        reader = HeadReader(node)
        submitter.start()
        reader.start()
        try:
            time.sleep(1.0)
            begun = time.monotonic()
            restart = node.cli("restart", "producer")
            ended = time.monotonic()
            # Submissions go on after the restart and reach the new producer.
            time.sleep(1.5)
        finally:
            submitter.stopping.set()
            reader.stopping.set()
            submitter.join(10)
            reader.join(10)
        assert restart.returncode == 0, restart.stderr
        after = node.actor_pids()
        assert restart.stdout == f"restarted producer pid={after['producer']}\n"
        assert after["producer"] != before["producer"]
        for name in ACTORS:
            if name != "producer":
                assert after[name] == before[name], name

        # Reads never need the producer, so every one gets 200.
        assert reader.errors == []
        statuses = {status for _, status in reader.responses}
        assert statuses == {200}
        during = [t for t, _ in reader.responses if begun <= t <= ended]
        assert len(during) >= 3, f"only {len(during)} reads during the restart"

        # A submission gets 503 unavailable only while the producer restarts.
        for at, status, code in submitter.responses:
            assert status in (200, 202, 503), (status, code)
            if status == 503:
                assert code == "unavailable"
                assert begun <= at <= ended, (at - begun, ended - begun)
        assert any(at > ended for at, status, _ in submitter.responses if status == 202)
        wait_committed(node, submitter.acked)


def test_stop_closes_idle_keepalive(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.start()
    try:
        node.wait_ready()
        with socket.create_connection(("127.0.0.1", node.port), timeout=30) as conn:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, headers, _ = read_response(conn)
            assert status == 200
            assert headers.get("connection") != "close"
            assert node.process is not None
            signalled = time.monotonic()
            node.process.send_signal(signal.SIGTERM)
            # The connection stays idle; the server closes it on its own.
            rest = conn.recv(1024)
            closed_s = time.monotonic() - signalled
        assert rest == b""
        # Without its idle timer the connection would stay open until
        # hypercorn's drain timeout; the bound is a second below it.
        assert closed_s < DRAIN_TIMEOUT_S - 1.0
        assert node.process.wait(40) == 0
    finally:
        if node.process is not None and node.process.poll() is None:
            node.kill_tree()
    log = node.log()
    assert "did not return within grace" not in log
    assert "grace expired" not in log
    assert re.search(r"^api \| .* stopped code=0 ", log, re.MULTILINE)


def test_sigterm_under_load(tmp_path: Path) -> None:
    node = Node(tmp_path, env=LOAD_ENV)
    node.start()
    submitter: Submitter | None = None
    try:
        node.wait_ready()
        alice_path = tmp_path / "alice.key"
        node.cli("keygen", "--out", str(alice_path), "--account", "@alice", check=True)
        registered = node.tx("register", key=str(alice_path))
        assert registered.returncode == 0, registered.stderr
        alice = keys.load_key_file(alice_path)
        slow_envelope = build_envelope(
            alice,
            chain_id="weall-dev",
            tx_type="PROFILE_UPDATE",
            signer="@alice",
            nonce=1,
            payload={"display_name": "sent slowly"},
        )
        body = json.dumps(slow_envelope).encode()
        head = (
            "POST /v1/tx/submit HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()

        submitter = Submitter(node)
        submitter.start()
        time.sleep(1.5)
        with socket.create_connection(("127.0.0.1", node.port), timeout=30) as conn:
            half = len(body) // 2
            conn.sendall(head + body[:half])
            time.sleep(0.3)
            assert node.process is not None
            signalled = time.monotonic()
            node.process.send_signal(signal.SIGTERM)
            # The request is in flight while the api drains: only then does
            # the rest of its body arrive.
            wait_for_line(node, r"^api \| .* stopping signal=SIGTERM")
            conn.sendall(body[half:])
            status, _, response_body = read_response(conn)
        assert status == 202, response_body
        slow_tx_id = json.loads(response_body)["tx_id"]
        code = node.process.wait(40)
        stop_s = time.monotonic() - signalled
    finally:
        if submitter is not None:
            submitter.stopping.set()
            submitter.join(10)
        if node.process is not None and node.process.poll() is None:
            node.kill_tree()
    # Printed for the record; pytest shows it with -s.
    print(f"SIGTERM to exit under load: {stop_s:.3f} s")
    assert code == 0, node.log()[-3000:]
    assert stop_s < 30.0
    assert "SIGKILL" not in node.log()
    assert submitter.acked, "the load never got an acknowledgement"

    with running_node(tmp_path) as restarted:
        wait_committed(restarted, [*submitter.acked, slow_tx_id])
        profile = restarted.get("/v1/accounts/@alice").json()["profile"]
        assert profile["display_name"] == "sent slowly"
