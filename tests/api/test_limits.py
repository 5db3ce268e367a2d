"""Request limits of a live node: body size, slow clients, rate limits, proxies.

The node runs with small limits so that each case is quick: a 64 KiB body
limit, a 2 s header deadline, a 3 s body deadline, and a burst of 5 requests
refilled at one per 20 s. Every client connects from its own loopback address
(127.0.0.x), so each has its own rate-limit bucket; 127.0.0.1 and 127.0.0.2
are the trusted proxies.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from e2e.node import Node

pytestmark = pytest.mark.slow

BODY_LIMIT = 64 * 1024
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
BURST = 5
LIMITS_ENV = {
    "WEALL_MAX_REQUEST_BYTES": str(BODY_LIMIT),
    "WEALL_API_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "WEALL_API_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "WEALL_RATE_LIMIT_PER_S": "0.05",
    "WEALL_RATE_LIMIT_BURST": str(BURST),
    "WEALL_TRUSTED_PROXIES": "127.0.0.1,127.0.0.2/32",
}
# Generous slack on a loaded machine: a cut-off may come this much late.
SLACK_S = 4.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    live = Node(tmp_path_factory.mktemp("limits-node"), env=dict(LIMITS_ENV))
    live.start()
    try:
        live.wait_ready(timeout=90.0)
        yield live
    finally:
        if live.process is not None and live.process.poll() is None:
            live.stop()


def _connect(node: Node, source: str) -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", node.port), timeout=10, source_address=(source, 0)
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Read until the peer closes or ``timeout`` passes; return what arrived."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def _client(source: str) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(local_address=source), timeout=10.0
    )


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


# -- body size --------------------------------------------------------------------


def test_content_length_over_limit_gets_413_at_once(node: Node) -> None:
    sock = _connect(node, "127.0.0.10")
    with sock:
        sock.sendall(
            b"POST /v1/tx/submit HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10485760\r\n\r\n"
        )
        # No body byte is sent, and the 413 must arrive anyway.
        answer = _read_response(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"too_large"' in answer


def _stream_chunked(node: Node, source: str, planned: int) -> tuple[bytes, int]:
    """Send a chunked body of up to ``planned`` bytes; return the response and bytes sent."""
    sock = _connect(node, source)
    chunk = b"a" * 16384
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    answer = b""
    with sock:
        sock.sendall(
            b"POST /v1/tx/submit HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        while sent < planned:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                answer = _read_response(sock, timeout=5.0)
                break
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                answer = answer or _read_response(sock, timeout=1.0)
                break
            sent += len(chunk)
    return answer, sent


def test_chunked_body_over_limit_gets_413_while_sending(node: Node) -> None:
    planned = 64 * 1024 * 1024
    answer, sent = _stream_chunked(node, "127.0.0.11", planned)
    assert answer.startswith(b"HTTP/1.1 413"), (sent, answer[:200])
    assert b'"code":"too_large"' in answer
    # The response arrived long before the client would have finished.
    assert sent < 8 * 1024 * 1024, sent


def test_chunked_bodies_do_not_grow_memory(node: Node) -> None:
    api_pid = node.actor_pids()["api"]
    _stream_chunked(node, "127.0.0.12", 4 * 1024 * 1024)
    before = _rss_kib(api_pid)
    total = 0
    for index in range(5):
        answer, sent = _stream_chunked(node, f"127.0.0.{13 + index}", 32 * 1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        total += sent
    after = _rss_kib(api_pid)
    assert node.actor_pids()["api"] == api_pid, "the api actor restarted"
    assert after - before < 16 * 1024, (before, after, total)


# -- slow clients ---------------------------------------------------------------------


def _seconds_until_closed(sock: socket.socket, trickle: bytes, limit_s: float) -> float:
    """Send ``trickle`` one byte every 0.25 s until the server closes; return the time."""
    started = time.monotonic()
    position = 0
    while time.monotonic() - started < limit_s:
        readable, _, _ = select.select([sock], [], [], 0.25)
        if readable:
            try:
                if sock.recv(65536) == b"":
                    return time.monotonic() - started
            except ConnectionResetError:
                return time.monotonic() - started
            continue
        if position < len(trickle):
            try:
                sock.send(trickle[position : position + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
            position += 1
    raise AssertionError(f"connection still open after {limit_s} s")


def test_unfinished_headers_are_cut_off(node: Node) -> None:
    sock = _connect(node, "127.0.0.30")
    with sock:
        sock.sendall(b"GET /v1/chain/head HTTP/1.1\r\nHost: node\r\n")
        trickle = b"X-Slow: " + b"a" * 400
        elapsed = _seconds_until_closed(sock, trickle, HEADER_TIMEOUT_S + SLACK_S)
    assert elapsed >= HEADER_TIMEOUT_S * 0.5


def test_silent_connection_is_cut_off(node: Node) -> None:
    sock = _connect(node, "127.0.0.31")
    with sock:
        elapsed = _seconds_until_closed(sock, b"", HEADER_TIMEOUT_S + SLACK_S)
    assert elapsed >= HEADER_TIMEOUT_S * 0.5


def test_trickled_body_gets_408(node: Node) -> None:
    sock = _connect(node, "127.0.0.32")
    with sock:
        sock.sendall(
            b"POST /v1/tx/submit HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2000\r\n\r\n{"
        )
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < BODY_TIMEOUT_S + SLACK_S:
            readable, _, _ = select.select([sock], [], [], 0.25)
            if readable:
                answer = _read_response(sock, timeout=5.0)
                break
            sock.send(b" ")
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code":"request_timeout"' in answer
    assert elapsed >= BODY_TIMEOUT_S * 0.5


# -- rate limits ------------------------------------------------------------------------


def _exhaust(
    client: httpx.Client, url: str, headers: dict[str, str] | None = None
) -> None:
    for attempt in range(BURST):
        response = client.get(url, headers=headers)
        assert response.status_code == 200, (attempt, response.text)


def test_rate_limit_answers_429_with_retry_after(node: Node) -> None:
    with _client("127.0.0.40") as client:
        _exhaust(client, f"{node.url}/v1/chain/head")
        limited = client.get(f"{node.url}/v1/chain/head")
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    error = limited.json()
    assert error["ok"] is False
    assert error["error"]["code"] == "rate_limited"
    assert error["error"]["details"]["retry_after_s"] == int(
        limited.headers["retry-after"]
    )


def test_rate_limit_exempts_probes(node: Node) -> None:
    with _client("127.0.0.41") as client:
        for _ in range(BURST * 4):
            assert client.get(f"{node.url}/health").status_code == 200
            assert client.get(f"{node.url}/v1/readyz").status_code == 200
        # The probes took no tokens.
        _exhaust(client, f"{node.url}/v1/chain/head")


SPOOFS = [
    {"X-Forwarded-For": "203.0.113.1"},
    {"X-Forwarded-For": "203.0.113.2, 198.51.100.2"},
    {"Forwarded": "for=203.0.113.3"},
    {"X-Real-IP": "203.0.113.4"},
    {"X-Forwarded-For": "127.0.0.99"},
]


@pytest.mark.parametrize(
    "headers",
    SPOOFS,
    ids=["xff", "xff-chain", "forwarded", "x-real-ip", "xff-loopback"],
)
def test_untrusted_peer_cannot_pick_identity(
    node: Node, headers: dict[str, str]
) -> None:
    source = f"127.0.0.{50 + SPOOFS.index(headers)}"
    with _client(source) as client:
        _exhaust(client, f"{node.url}/v1/feed")
        response = client.get(f"{node.url}/v1/feed", headers=headers)
    assert response.status_code == 429


def test_trusted_proxy_forwards_client_identity(node: Node) -> None:
    url = f"{node.url}/v1/feed"
    with _client("127.0.0.1") as proxy:
        _exhaust(proxy, url, {"X-Forwarded-For": "203.0.113.7"})
        assert (
            proxy.get(url, headers={"X-Forwarded-For": "203.0.113.7"}).status_code
            == 429
        )
        # Another client behind the same proxy has its own bucket.
        assert (
            proxy.get(url, headers={"X-Forwarded-For": "203.0.113.8"}).status_code
            == 200
        )
        # A client that prepends a forged hop is still identified by the hop the proxy added.
        forged = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
        assert proxy.get(url, headers=forged).status_code == 429
        # A chain of trusted proxies is walked past to the client.
        chained = {"X-Forwarded-For": "203.0.113.7, 127.0.0.2"}
        assert proxy.get(url, headers=chained).status_code == 429


def test_trusted_proxy_header_is_the_configured_one(node: Node) -> None:
    url = f"{node.url}/v1/feed"
    with _client("127.0.0.2") as proxy:
        _exhaust(proxy, url)
        # WEALL_FORWARDED_HEADER is x-forwarded-for, so Forwarded is ignored.
        assert (
            proxy.get(url, headers={"Forwarded": "for=203.0.113.20"}).status_code == 429
        )
        assert (
            proxy.get(url, headers={"X-Forwarded-For": "203.0.113.20"}).status_code
            == 200
        )
