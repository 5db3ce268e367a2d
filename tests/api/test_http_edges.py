"""Requests at the edges of HTTP against a live node: an invalid Host header,
a path with "//", and HTTP/2 frames that hypercorn mishandles. Each gets a
response in the JSON error format or a closed connection, and none stops the
api process.
"""

from __future__ import annotations

import json
import os
import socket
import time

import h2.config
import h2.connection
import h2.events
import pytest
from e2e.test_stop import read_response

from ._live import World

pytestmark = pytest.mark.slow


def _raw_request(world: World, head: str) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (request line and headers) and return status, headers, body."""
    with socket.create_connection(("127.0.0.1", world.node.port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        return read_response(sock)


@pytest.mark.parametrize(
    "host",
    ["a" * 64, "a..example", "a" * 64 + ".example:8000"],
)
def test_invalid_host_gets_400_json(world: World, host: str) -> None:
    status, headers, body = _raw_request(
        world, f"GET /v1/feed HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    assert status == 400, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("path", ["/v1//feed", "/v1/accounts//@founder"])
def test_double_slash_path_gets_404_json(world: World, path: str) -> None:
    status, headers, body = _raw_request(
        world,
        f"GET {path} HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
    )
    assert status == 404, body
    assert "location" not in headers
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "not_found"


def _h2_events(
    sock: socket.socket, conn: h2.connection.H2Connection
) -> list[h2.events.Event]:
    data = sock.recv(65536)
    if not data:
        return [h2.events.ConnectionTerminated()]
    events = conn.receive_data(data)
    sock.sendall(conn.data_to_send())
    return events


def test_h2_data_after_response_keeps_api(world: World) -> None:
    api_pid = world.node.actor_pids()["api"]
    restarts = world.node.actor_status()["api"]["restarts"]
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection(("127.0.0.1", world.node.port), timeout=10) as sock:
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        # The node responds 413 to a declared body over the limit before
        # reading it, and closes the stream.
        conn.send_headers(
            1,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", "127.0.0.1"),
                (":path", "/v1/tx/submit"),
                ("content-type", "application/json"),
                ("content-length", str(5_000_000)),
            ],
        )
        sock.sendall(conn.data_to_send())
        status = None
        ended = False
        while not ended:
            for event in _h2_events(sock, conn):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                ended = ended or isinstance(
                    event, (h2.events.StreamEnded, h2.events.ConnectionTerminated)
                )
        assert status == b"413"
        # The body goes on arriving for the stream the node has closed.
        conn.send_data(1, b" " * 1000)
        sock.sendall(conn.data_to_send())
        sock.settimeout(10)
        try:
            while sock.recv(65536):
                pass
        except (TimeoutError, ConnectionResetError):
            pass

    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert os.path.exists(f"/proc/{api_pid}"), "the api process exited"
        time.sleep(0.1)
    assert world.node.get("/health").status_code == 200
    assert world.node.actor_pids()["api"] == api_pid
    assert world.node.actor_status()["api"]["restarts"] == restarts
