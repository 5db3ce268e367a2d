"""Requests at the edges of HTTP against a live node: an invalid Host header
and a path with "//". Each gets a response in the JSON error format.
"""

from __future__ import annotations

import json
import socket

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
