"""An HTTP proxy on 127.0.0.1 that relays a real node but alters one block.

The proxy runs Trio in a background thread and speaks HTTP/1.1 with h11,
one request per connection. Every request goes to the upstream node
unchanged. In the replies to ``GET /v1/blocks`` and ``GET /v1/blocks/{h}``,
the block at ``height`` passes through ``alter`` before it is sent on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import h11
import httpx
import orjson
import trio

__all__ = ["TamperProxy"]

Alter = Callable[[dict[str, Any]], None]


class TamperProxy:
    """Relays ``upstream_url``, applying ``alter`` to block ``height`` in place."""

    def __init__(self, upstream_url: str, height: int, alter: Alter) -> None:
        self.upstream_url = upstream_url
        self.height = height
        self.alter = alter
        self.port = 0
        self.altered = 0
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(
            target=trio.run, args=(self._main,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> TamperProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("tamper proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        assert self._scope is not None
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with httpx.AsyncClient(
            base_url=self.upstream_url, trust_env=False, timeout=30.0
        ) as client:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            with trio.CancelScope() as scope:
                self._scope = scope
                self._ready.set()
                await trio.serve_listeners(
                    lambda stream: self._serve(stream, client), listeners
                )

    async def _serve(
        self, stream: trio.SocketStream, client: httpx.AsyncClient
    ) -> None:
        connection = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        async with stream:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage) and request is not None:
                    status, content = await self._relay(client, request, body)
                    await self._respond(stream, connection, status, content)
                    return
                else:
                    return

    async def _relay(
        self, client: httpx.AsyncClient, request: h11.Request, body: bytes
    ) -> tuple[int, bytes]:
        target = request.target.decode()
        response = await client.request(
            request.method.decode(),
            target,
            content=body or None,
            headers={"Content-Type": "application/json"} if body else None,
        )
        content = response.content
        if (
            request.method == b"GET"
            and target.startswith("/v1/blocks")
            and response.status_code == 200
        ):
            content = self._tamper(orjson.loads(content))
        return response.status_code, content

    def _tamper(self, document: dict[str, Any]) -> bytes:
        blocks = document.get("blocks", [document])
        for block in blocks:
            if block.get("height") == self.height:
                self.alter(block)
                self.altered += 1
        return orjson.dumps(document)

    @staticmethod
    async def _respond(
        stream: trio.SocketStream,
        connection: h11.Connection,
        status: int,
        content: bytes,
    ) -> None:
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(content))),
            ("connection", "close"),
        ]
        for event in (
            h11.Response(status_code=status, headers=headers),
            h11.Data(data=content),
            h11.EndOfMessage(),
        ):
            await stream.send_all(connection.send(event) or b"")
