"""KuboBackend retries and reply parsing, against a scripted HTTP server.

A real daemon cannot be made to return 503, to reply in Kubo's format, or to
cut a transfer short on demand. These cases therefore use a small HTTP/1.1
server on 127.0.0.1 that sends the next scripted reply to each request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

import orjson
import pytest
import trio

from weall.errors import ClosedError, ConfigError, IpfsError
from weall.ipfs import KuboBackend

from ._support import free_port_block, read_all, stream

HELLO_CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
RPC_ERROR_TIMED_OUT = {"Message": "request timed out", "Code": 0, "Type": "error"}


@dataclass
class Reply:
    status: int
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, value: object) -> Reply:
    return Reply(status, orjson.dumps(value), {"Content-Type": "application/json"})


@dataclass
class ScriptedServer:
    """HTTP server that sends the next scripted reply to each request.

    The last reply repeats once the script runs out.
    """

    replies: list[Reply]
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, connection: trio.SocketStream) -> None:
        async with connection:
            target, body = await _read_request(connection)
            self.requests.append((target, body))
            reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
            head = [f"HTTP/1.1 {reply.status} X", "Connection: close"]
            head += [f"{name}: {value}" for name, value in reply.headers.items()]
            head.append(f"Content-Length: {len(reply.body)}")
            await connection.send_all(
                ("\r\n".join(head) + "\r\n\r\n").encode() + reply.body
            )


async def _read_request(connection: trio.SocketStream) -> tuple[str, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await connection.receive_some(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    if headers.get("transfer-encoding") == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            rest += await connection.receive_some(65536)
        return lines[0].split(" ")[1], _decode_chunked(rest)
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += await connection.receive_some(65536)
    return lines[0].split(" ")[1], rest


def _decode_chunked(data: bytes) -> bytes:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return body
        body += data[:size]
        data = data[size + 2 :]


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer([])
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        server.url = f"http://127.0.0.1:{port}"
        yield server
        nursery.cancel_scope.cancel()


def client(url: str, *, max_attempts: int = 4) -> KuboBackend:
    return KuboBackend(
        url,
        timeout_s=5.0,
        max_attempts=max_attempts,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
    )


async def test_retries_5xx_then_succeeds(
    scripted: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    scripted.replies = [
        Reply(503, b"busy"),
        Reply(502, b""),
        json_reply(200, {"Version": "0.29.0"}),
    ]
    caplog.set_level(logging.INFO, logger="weall.ipfs.kubo")

    async with client(scripted.url) as backend:
        version = await backend.version()

    assert version == "0.29.0"
    assert len(scripted.requests) == 3
    retries = [
        record for record in caplog.records if "retry_in=" in record.getMessage()
    ]
    assert len(retries) == 2
    assert any(
        "recovered op=version errors=2" in r.getMessage() for r in caplog.records
    )


async def test_gives_up_after_max_attempts(scripted: ScriptedServer) -> None:
    scripted.replies = [Reply(503, b"busy")]

    async with client(scripted.url, max_attempts=3) as backend:
        with pytest.raises(IpfsError) as caught:
            await backend.stat()

    assert caught.value.code == "ipfs_unavailable"
    assert len(scripted.requests) == 3


async def test_no_retry_on_4xx(scripted: ScriptedServer) -> None:
    scripted.replies = [
        json_reply(400, {"Message": "bad arg", "Code": 1, "Type": "error"})
    ]

    async with client(scripted.url) as backend:
        with pytest.raises(IpfsError) as caught:
            await backend.stat()

    assert caught.value.code == "ipfs_failed"
    assert "bad arg" in caught.value.message
    assert len(scripted.requests) == 1


async def test_no_retry_on_rpc_error_500(scripted: ScriptedServer) -> None:
    scripted.replies = [
        json_reply(500, {"Message": "boom", "Code": 0, "Type": "error"})
    ]

    async with client(scripted.url) as backend:
        with pytest.raises(IpfsError) as caught:
            await backend.pin(HELLO_CID)

    assert caught.value.code == "ipfs_failed"
    assert len(scripted.requests) == 1


async def test_unreachable_daemon_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port_block(1)}"
    caplog.set_level(logging.WARNING, logger="weall.ipfs.kubo")

    async with client(url, max_attempts=3) as backend:
        with pytest.raises(IpfsError) as caught:
            await backend.has(HELLO_CID)

    assert caught.value.code == "ipfs_unavailable"
    assert "after 3 attempts" in caught.value.message
    assert len([r for r in caplog.records if "retry_in=" in r.getMessage()]) == 2


async def test_add_not_retried_after_body_sent(scripted: ScriptedServer) -> None:
    scripted.replies = [Reply(503, b"busy")]

    async with client(scripted.url) as backend:
        with pytest.raises(IpfsError) as caught:
            await backend.add(stream([b"hello world\n"]), pin=False)

    assert caught.value.code == "ipfs_unavailable"
    assert len(scripted.requests) == 1


async def test_add_sends_multipart_and_params(scripted: ScriptedServer) -> None:
    scripted.replies = [
        json_reply(200, {"Name": "file", "Hash": HELLO_CID, "Size": "12"})
    ]

    async with client(scripted.url) as backend:
        result = await backend.add(stream([b"hello ", b"world\n"]), pin=True)

    target, body = scripted.requests[0]
    assert result.cid == HELLO_CID
    assert result.size == 12
    for param in ("cid-version=1", "raw-leaves=true", "cid-base=base32", "pin=true"):
        assert param in target
    assert "chunker=size-262144" in target
    assert b'name="file"' in body
    assert b"\r\n\r\nhello world\n\r\n--" in body


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            {"Name": "file", "Hash": HELLO_CID, "Size": "12"}, id="kubo-size-string"
        ),
        pytest.param(
            {"Name": "file", "Hash": HELLO_CID, "Size": 12, "Mode": "0644"},
            id="js-ipfs-size-number-and-mode",
        ),
        pytest.param(
            {
                "Name": "file",
                "Hash": "zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY",
            },
            id="base58-hash-without-size",
        ),
    ],
)
async def test_add_reply_variants(
    scripted: ScriptedServer, reply: dict[str, object]
) -> None:
    scripted.replies = [json_reply(200, reply)]

    async with client(scripted.url) as backend:
        result = await backend.add(stream([b"hello world\n"]), pin=False)

    assert result.cid == HELLO_CID


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param({"RepoSize": 1234, "NumObjects": 5}, id="numbers"),
        pytest.param(
            {"RepoSize": "1234", "NumObjects": "5", "StorageMax": "9"}, id="strings"
        ),
    ],
)
async def test_repo_stat_variants(
    scripted: ScriptedServer, reply: dict[str, object]
) -> None:
    scripted.replies = [json_reply(200, reply)]

    async with client(scripted.url) as backend:
        stat = await backend.stat()

    assert stat.repo_size_bytes == 1234
    assert stat.num_blocks == 5


async def test_cat_timed_out_not_found(scripted: ScriptedServer) -> None:
    scripted.replies = [json_reply(500, RPC_ERROR_TIMED_OUT)]

    async with client(scripted.url) as backend:
        with pytest.raises(IpfsError) as caught:
            await read_all(backend.cat(HELLO_CID))

    assert caught.value.code == "not_found"
    assert "timeout=" in scripted.requests[0][0]


async def test_cat_short_transfer_detected(scripted: ScriptedServer) -> None:
    scripted.replies = [Reply(200, b"hello", {"X-Content-Length": "12"})]

    async with client(scripted.url) as backend:
        with pytest.raises(IpfsError) as caught:
            await read_all(backend.cat(HELLO_CID))

    assert caught.value.code == "ipfs_failed"
    assert "5 of 12" in caught.value.message


async def test_has_and_is_pinned_map_errors(scripted: ScriptedServer) -> None:
    not_pinned = {
        "Message": f"path '{HELLO_CID}' is not pinned",
        "Code": 0,
        "Type": "error",
    }
    scripted.replies = [
        json_reply(500, RPC_ERROR_TIMED_OUT),
        json_reply(500, not_pinned),
    ]

    async with client(scripted.url) as backend:
        present = await backend.has(HELLO_CID)
        pinned = await backend.is_pinned(HELLO_CID)

    assert not present
    assert not pinned
    assert "offline=true" in scripted.requests[0][0]


async def test_unpin_not_pinned_is_noop(scripted: ScriptedServer) -> None:
    message = "not pinned or pinned indirectly"
    scripted.replies = [
        json_reply(500, {"Message": message, "Code": 0, "Type": "error"})
    ]

    async with client(scripted.url) as backend:
        await backend.unpin(HELLO_CID)

    assert len(scripted.requests) == 1


async def test_list_pins_normalizes_cids(scripted: ScriptedServer) -> None:
    keys = {
        "zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY": {"Type": "recursive"},
        "bafyreibnoelefnzgwbcacyt4vh52ymxvzbjq7mmqhtcnwarfq4lzegsiqe": {
            "Type": "recursive"
        },
    }
    scripted.replies = [json_reply(200, {"Keys": keys})]

    async with client(scripted.url) as backend:
        pins = await backend.list_pins()

    assert pins == [
        HELLO_CID,
        "bafyreibnoelefnzgwbcacyt4vh52ymxvzbjq7mmqhtcnwarfq4lzegsiqe",
    ]


async def test_invalid_cid_sends_nothing(scripted: ScriptedServer) -> None:
    async with client(scripted.url) as backend:
        with pytest.raises(IpfsError) as caught:
            await backend.pin("not-a-cid")

    assert caught.value.code == "invalid_cid"
    assert scripted.requests == []


async def test_closed_client_raises() -> None:
    backend = client("http://127.0.0.1:9")
    await backend.aclose()

    with pytest.raises(ClosedError):
        await backend.version()


def test_rejects_non_http_url() -> None:
    with pytest.raises(ConfigError, match="WEALL_IPFS_API_URL"):
        KuboBackend("127.0.0.1:5001")


async def test_unknown_endpoint_is_not_not_found(scripted: ScriptedServer) -> None:
    scripted.replies = [
        json_reply(404, {"Message": "Not Found", "Code": 3, "Type": "error"})
    ]

    async with client(scripted.url) as backend:
        with pytest.raises(IpfsError) as caught:
            await backend.has(HELLO_CID)

    assert caught.value.code == "ipfs_failed"
    assert len(scripted.requests) == 1
