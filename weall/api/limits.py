"""Request limits enforced below the Quart app, at the ASGI layer.

``BodyLimitMiddleware`` responds with 413 ``too_large`` for a body over the limit
of its path, before the body is read in full: at once when ``Content-Length``
is over the limit, and as soon as the running count of a chunked body passes
it. It responds with 408 ``request_timeout`` when the whole body has not arrived
within ``WEALL_API_BODY_TIMEOUT_S`` of the request's start. In both cases the
app is told that the client went away, so the route stops, and the
connection is closed after the response, so the node reads no more of the body.
It also turns an exception that escapes the app into a 503 in the JSON error
format, because hypercorn would otherwise send an empty 500.

``apply_connection_limits`` sets hypercorn's connection timeouts: a client
has ``WEALL_API_HEADER_TIMEOUT_S`` from connecting (or from the end of the
previous response on a kept-alive connection) to finish its request headers,
after which hypercorn closes the connection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson
import trio

if TYPE_CHECKING:
    from hypercorn.config import Config as HypercornConfig

    from weall.config import Config

__all__ = [
    "MAX_HEADER_BYTES",
    "AsgiApp",
    "BodyLimitMiddleware",
    "apply_connection_limits",
    "send_error",
]

log = logging.getLogger(__name__)
access_log = logging.getLogger("weall.api.access")

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

# The max size of the request line and headers together. Past this,
# hypercorn responds with 400 and closes the connection.
MAX_HEADER_BYTES: Final = 64 * 1024
_DISCONNECT: Final[Message] = {"type": "http.disconnect"}


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send a complete error response in the node's JSON error format."""
    body = orjson.dumps(
        {
            "ok": False,
            "error": {"code": code, "message": message, "details": details or {}},
        }
    )
    try:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})
    except (
        trio.BusyResourceError,
        trio.BrokenResourceError,
        trio.ClosedResourceError,
    ) as exc:
        # NOTE: seen with hypercorn 0.18 when a client is still sending an
        # oversized body: its connection is being written to or closed
        # already, so the client may see a reset instead of this answer.
        log.warning("error answer not sent status=%d code=%s: %r", status, code, exc)


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) < 20 else None
    return None


class _Exchange:
    """One request: counts body bytes, keeps the deadline, records what was sent."""

    def __init__(
        self, receive: Receive, send: Send, limit: int, deadline: float
    ) -> None:
        self._receive = receive
        self._send = send
        self.limit = limit
        self.deadline = deadline
        self.received = 0
        self.body_done = False
        self.started = False
        self.failure: tuple[int, str, str] | None = None

    async def receive(self) -> Message:
        if self.failure is not None:
            return _DISCONNECT
        if self.body_done:
            return await self._receive()
        with trio.move_on_at(self.deadline) as timer:
            message = await self._receive()
        if timer.cancelled_caught:
            return self._fail(
                408, "request_timeout", "the request body did not arrive in time"
            )
        if message["type"] != "http.request":
            return message
        self.received += len(message.get("body", b""))
        self.body_done = not message.get("more_body", False)
        if self.received > self.limit:
            return self._fail(
                413, "too_large", f"the request body exceeds {self.limit} bytes"
            )
        return message

    def _fail(self, status: int, code: str, message: str) -> Message:
        if self.started:
            # The route already responded without waiting for the whole body,
            # so what is left is dropped instead of buffered.
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        self.failure = (status, code, message)
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        if self.failure is not None:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class BodyLimitMiddleware:
    """ASGI middleware for body size and body time limits, and the last-resort 503."""

    def __init__(
        self,
        app: AsgiApp,
        *,
        default_limit: int,
        path_limits: Mapping[str, int] | None = None,
        body_timeout_s: float,
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.path_limits = dict(path_limits or {})
        self.body_timeout_s = body_timeout_s

    def limit_for(self, path: str) -> int:
        return self.path_limits.get(path, self.default_limit)

    async def __call__(
        self, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            self._log(scope, 413, declared)
            await send_error(
                send,
                413,
                "too_large",
                f"the request body exceeds {limit} bytes",
                details={"max_bytes": limit},
                headers=[(b"connection", b"close")],
            )
            return
        exchange = _Exchange(
            receive, send, limit, trio.current_time() + self.body_timeout_s
        )
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception:
            log.exception("request failed below the app path=%s", scope.get("path"))
            if not exchange.started:
                await send_error(
                    send, 503, "unavailable", "internal error; the node logged it"
                )
            return
        if exchange.failure is not None and not exchange.started:
            status, code, message = exchange.failure
            self._log(scope, status, exchange.received)
            details = (
                {"max_bytes": limit}
                if status == 413
                else {"timeout_s": self.body_timeout_s}
            )
            await send_error(
                send,
                status,
                code,
                message,
                details=details,
                headers=[(b"connection", b"close")],
            )

    @staticmethod
    def _log(scope: dict[str, Any], status: int, received: int) -> None:
        access_log.info(
            "%s %s %d body_bytes=%d",
            scope.get("method"),
            scope.get("path"),
            status,
            received,
        )


def apply_connection_limits(hconfig: HypercornConfig, config: Config) -> None:
    """Set hypercorn's header deadline, keep-alive timeout and header size limit."""
    # hypercorn runs one idle timer from the connection's start (or the end of
    # the previous response) until the request headers are complete, so
    # keep_alive_timeout is the header deadline as well as the idle limit.
    hconfig.keep_alive_timeout = config.api_header_timeout_s
    hconfig.h11_max_incomplete_size = MAX_HEADER_BYTES
    hconfig.max_app_queue_size = 10
