"""An HTTP proxy on 127.0.0.1 that relays a real node but alters one block.

The proxy runs Trio in a background thread and speaks HTTP/1.1 with h11,
one request per connection. Every request goes to the upstream node
unchanged, except that a ``limit`` above ``page_limit`` in a
``GET /v1/blocks`` query is lowered to it. In the replies to
``GET /v1/blocks`` and ``GET /v1/blocks/{h}``, the block at ``height``
(every block when ``height`` is None) passes through ``alter`` before it is
sent on, and each of those replies waits ``delay_s`` first. A small page limit and a delay make a sync slow
enough to watch.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import h11
import httpx
import orjson
import trio

__all__ = ["TamperProxy"]

Alter = Callable[[dict[str, Any]], None]


class TamperProxy:
    """Relays ``upstream_url``, applying ``alter`` to block ``height`` in place."""

    def __init__(
        self,
        upstream_url: str,
        height: int | None = None,
        alter: Alter | None = None,
        *,
        page_limit: int | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self.upstream_url = upstream_url
        self.height = height
        self.alter = alter
        self.page_limit = page_limit
        self.delay_s = delay_s
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
        # A follower that stops, or gives up on a delayed reply, closes its
        # end while the proxy still reads or writes: that ends this connection
        # only, not the proxy.
        closed = (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError)
        with contextlib.suppress(*closed):
            await self._serve_one(stream, client)

    async def _serve_one(
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
        target = self._limited(request.target.decode())
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
            await trio.sleep(self.delay_s)
            content = self._tamper(orjson.loads(content))
        return response.status_code, content

    def _limited(self, target: str) -> str:
        """Lower the ``limit`` of a ``GET /v1/blocks`` query to ``page_limit``."""
        path, _, query = target.partition("?")
        if self.page_limit is None or path != "/v1/blocks" or not query:
            return target
        params = parse_qsl(query)
        params = [
            (name, str(min(int(value), self.page_limit)) if name == "limit" else value)
            for name, value in params
        ]
        return f"{path}?{urlencode(params)}"

    def _tamper(self, document: dict[str, Any]) -> bytes:
        if self.alter is None:
            return orjson.dumps(document)
        blocks = document.get("blocks", [document])
        for block in blocks:
            if self.height is None or block.get("height") == self.height:
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
