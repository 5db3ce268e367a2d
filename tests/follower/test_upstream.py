"""The upstream client against a real HTTP server on 127.0.0.1: retries and limits."""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import h11
import orjson
import pytest
import trio

from weall.errors import UpstreamError
from weall.follow.relay import forwarding_headers, relay_submission
from weall.follow.upstream import UpstreamClient

# A route gets the request count of its path and returns (status, body), or
# sends its own bytes and returns None.
Route = Callable[
    [int, trio.SocketStream, h11.Connection], Awaitable[tuple[int, bytes] | None]
]


async def _send(
    stream: trio.SocketStream, conn: h11.Connection, status: int, body: bytes
) -> None:
    headers = [("content-length", str(len(body))), ("connection", "close")]
    for event in (
        h11.Response(status_code=status, headers=headers),
        h11.Data(data=body),
        h11.EndOfMessage(),
    ):
        await stream.send_all(conn.send(event) or b"")


async def _flaky(
    count: int, stream: trio.SocketStream, conn: h11.Connection
) -> tuple[int, bytes]:
    return (503, b"{}") if count <= 2 else (200, b'{"ok": true}')


async def _big(
    count: int, stream: trio.SocketStream, conn: h11.Connection
) -> tuple[int, bytes]:
    return 200, b'"' + b"x" * 4096 + b'"'


async def _not_json(
    count: int, stream: trio.SocketStream, conn: h11.Connection
) -> tuple[int, bytes]:
    return 200, b"<html>hello</html>"


async def _conflict(
    count: int, stream: trio.SocketStream, conn: h11.Connection
) -> tuple[int, bytes]:
    return 409, b'{"ok": false, "error": {"code": "nonce_conflict"}}'


async def _server_error(
    count: int, stream: trio.SocketStream, conn: h11.Connection
) -> tuple[int, bytes]:
    return 500, b'{"ok": false}'


async def _trickle(count: int, stream: trio.SocketStream, conn: h11.Connection) -> None:
    headers = [("content-length", "1000"), ("connection", "close")]
    await stream.send_all(
        conn.send(h11.Response(status_code=200, headers=headers)) or b""
    )
    for _ in range(1000):
        await stream.send_all(conn.send(h11.Data(data=b" ")) or b"")
        await trio.sleep(0.1)


HEADERS: dict[str, dict[str, str]] = {}
ROUTES: dict[str, Route] = {
    "/flaky": _flaky,
    "/big": _big,
    "/not-json": _not_json,
    "/v1/tx/submit": _conflict,
    "/v1/tx/batch": _server_error,
    "/trickle": _trickle,
}


@asynccontextmanager
async def serve_routes() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """Serve ``ROUTES``; yield the base URL and the request count of each path.

    The headers of the last request to a path are kept under ``HEADERS``.
    """
    counts: dict[str, int] = {}

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    path = event.target.decode()
                    HEADERS[path] = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.EndOfMessage):
                    counts[path] = counts.get(path, 0) + 1
                    try:
                        reply = await ROUTES[path](counts[path], stream, conn)
                        if reply is not None:
                            await _send(stream, conn, *reply)
                    except trio.BrokenResourceError:
                        pass  # the client gave up first, as the deadline test wants
                    return
                elif not isinstance(event, h11.Data):
                    return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}", counts
        nursery.cancel_scope.cancel()


def _client(url: str, **options: float) -> UpstreamClient:
    settings = {
        "max_attempts": 3,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        **options,
    }
    return UpstreamClient(url, **settings)  # type: ignore[arg-type]


async def test_read_retries_server_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="weall.follow.upstream")
    async with serve_routes() as (url, counts):
        client = _client(url)
        status, document = await client.get_json("/flaky")
        await client.aclose()
    assert status == 200
    assert document == {"ok": True}
    assert counts["/flaky"] == 3
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert "retry_in=" in retries[0].getMessage()
    assert any("recovered" in r.getMessage() for r in caplog.records)


async def test_read_gives_up_after_attempts() -> None:
    async with serve_routes() as (url, counts):
        client = _client(url, max_attempts=2)
        with pytest.raises(UpstreamError) as caught:
            await client.get_json("/flaky")
        await client.aclose()
    assert counts["/flaky"] == 2
    assert "failed after 2 attempts" in str(caught.value)


async def test_oversized_reply_rejected() -> None:
    async with serve_routes() as (url, counts):
        client = _client(url, max_response_bytes=1024)
        with pytest.raises(UpstreamError) as caught:
            await client.get_json("/big")
        await client.aclose()
    assert "reply larger than 1024 bytes" in str(caught.value)
    assert counts["/big"] == 1


async def test_reply_not_json_rejected() -> None:
    async with serve_routes() as (url, _counts):
        client = _client(url)
        with pytest.raises(UpstreamError) as caught:
            await client.get_json("/not-json")
        await client.aclose()
    assert "not JSON" in str(caught.value)


async def test_trickling_reply_hits_deadline() -> None:
    async with serve_routes() as (url, counts):
        client = _client(url, max_attempts=2, deadline_s=0.5)
        with trio.fail_after(10):
            with pytest.raises(UpstreamError) as caught:
                await client.get_json("/trickle")
        await client.aclose()
    assert "no complete reply within 0.5 s" in str(caught.value)
    assert counts["/trickle"] == 2


async def test_unreachable_upstream_raises() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}")
    with pytest.raises(UpstreamError) as caught:
        await client.snapshot()
    await client.aclose()
    assert "ConnectError" in str(caught.value)


async def test_submission_status_relayed_once() -> None:
    async with serve_routes() as (url, counts):
        client = _client(url)
        client_ip = ipaddress.ip_address("203.0.113.7")
        status, body = await relay_submission(client, "/v1/tx/submit", b"{}", client_ip)
        with pytest.raises(UpstreamError) as caught:
            await relay_submission(client, "/v1/tx/batch", b"{}")
        await client.aclose()
    assert status == 409
    assert orjson.loads(body)["error"]["code"] == "nonce_conflict"
    assert counts["/v1/tx/submit"] == 1
    assert counts["/v1/tx/batch"] == 1
    assert "HTTP 500" in str(caught.value)
    assert HEADERS["/v1/tx/submit"]["x-forwarded-for"] == "203.0.113.7"
    assert HEADERS["/v1/tx/submit"]["forwarded"] == "for=203.0.113.7"
    assert "x-forwarded-for" not in HEADERS["/v1/tx/batch"]


def test_forwarding_headers_quote_ipv6() -> None:
    headers = forwarding_headers(ipaddress.ip_address("2001:db8::1"))
    assert headers["X-Forwarded-For"] == "2001:db8::1"
    assert headers["Forwarded"] == 'for="[2001:db8::1]"'
    assert forwarding_headers(None) == {}
