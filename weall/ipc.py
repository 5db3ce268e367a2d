"""Request and response messages between actors over Unix sockets.

A frame is a 4-byte big-endian length followed by that many bytes of JSON
(orjson). Requests carry an ``id``; the server answers each with a frame that
repeats the ``id``, so one connection carries many requests in flight at once
and answers may come back out of order.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import orjson
import trio

from weall.errors import IpcError

__all__ = [
    "MAX_FRAME_BYTES",
    "IpcClient",
    "open_client",
    "read_frame",
    "serve",
    "write_frame",
]

log = logging.getLogger(__name__)

MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
_HEADER: Final = struct.Struct(">I")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def _receive_exactly(stream: trio.SocketStream, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = await stream.receive_some(size - len(chunks))
        if not chunk:
            if chunks:
                raise IpcError("connection closed inside a frame")
            return None
        chunks += chunk
    return bytes(chunks)


async def read_frame(stream: trio.SocketStream) -> dict[str, Any] | None:
    """Read one frame; ``None`` at a clean end of stream."""
    header = await _receive_exactly(stream, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise IpcError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    body = await _receive_exactly(stream, size)
    if body is None:
        raise IpcError("connection closed inside a frame")
    message = orjson.loads(body)
    if not isinstance(message, dict):
        raise IpcError("frame is not a JSON object")
    return message


async def write_frame(stream: trio.SocketStream, message: dict[str, Any]) -> None:
    body = orjson.dumps(message)
    await stream.send_all(_HEADER.pack(len(body)) + body)


async def serve(
    path: Path,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on the Unix socket ``path`` and answer each request with ``handler``.

    A stale socket file from an earlier process is removed first; the caller
    must hold whatever lock makes it the only server for ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # noqa: ASYNC240 - a local unlink, before anything awaits
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(128)
    listener = trio.SocketListener(sock)
    log.info("ipc listening path=%s", path)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                nursery.start_soon(_serve_connection, stream, handler)
    finally:
        # Unlink first: aclose() is a checkpoint and raises Cancelled here.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # noqa: ASYNC240 - must not checkpoint while cancelled
        with trio.CancelScope(shield=True):
            await listener.aclose()


async def _serve_connection(stream: trio.SocketStream, handler: Handler) -> None:
    send_lock = trio.Lock()

    async def answer(request: dict[str, Any]) -> None:
        request_id = request.get("id")
        try:
            response = await handler(request)
        except Exception as exc:
            log.exception(
                "ipc handler failed op=%s id=%s", request.get("op"), request_id
            )
            response = {
                "ok": False,
                "error": {"code": "unavailable", "message": str(exc)},
            }
        response["id"] = request_id
        async with send_lock:
            try:
                await write_frame(stream, response)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.debug("ipc peer gone before answer id=%s", request_id)

    # The errors are caught inside the nursery, because raised from its body
    # they would leave it wrapped in an ExceptionGroup and end the whole
    # server. A peer that dies with responses unread makes the next read fail
    # with ECONNRESET.
    async with stream, trio.open_nursery() as nursery:
        try:
            while True:
                request = await read_frame(stream)
                if request is None:
                    return
                nursery.start_soon(answer, request)
        except (trio.BrokenResourceError, trio.ClosedResourceError, IpcError) as exc:
            log.debug("ipc connection ended: %s", exc)
        except orjson.JSONDecodeError as exc:
            log.warning("ipc peer sent invalid JSON: %s", exc)


class IpcClient:
    """A connection to an actor's socket that reconnects when it breaks.

    ``call`` sends a request and waits for its answer. When the connection is
    down it is opened again; a request that was in flight when the connection
    broke raises ``IpcError``, because the server may or may not have acted on
    it, and only the caller knows whether a retry is safe.
    """

    def __init__(self, path: Path, nursery: trio.Nursery) -> None:
        self.path = path
        self._nursery = nursery
        self._stream: trio.SocketStream | None = None
        self._pending: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._connect_lock = trio.Lock()
        self._send_lock = trio.Lock()
        self._closed = False

    async def _connect(self) -> trio.SocketStream:
        async with self._connect_lock:
            if self._stream is not None:
                return self._stream
            try:
                stream = await trio.open_unix_socket(str(self.path))
            except OSError as exc:
                raise IpcError(
                    f"cannot connect to {self.path}: {exc.strerror}"
                ) from exc
            self._stream = stream
            self._nursery.start_soon(self._read_loop, stream)
            return stream

    async def _read_loop(self, stream: trio.SocketStream) -> None:
        try:
            while True:
                message = await read_frame(stream)
                if message is None:
                    break
                waiter = self._pending.pop(message.get("id", -1), None)
                if waiter is not None:
                    waiter.send_nowait(message)
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            IpcError,
            orjson.JSONDecodeError,
        ):
            pass
        finally:
            if self._stream is stream:
                self._stream = None
            await stream.aclose()
            for waiter in self._pending.values():
                waiter.close()
            self._pending.clear()

    async def call(
        self,
        op: str,
        timeout: float = 30.0,
        **fields: Any,
    ) -> dict[str, Any]:
        """Send ``{"op": op, **fields}`` and return the answer."""
        if self._closed:
            raise IpcError("client is closed")
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        with trio.move_on_after(timeout) as scope:
            stream = await self._connect()
            self._pending[request_id] = send
            try:
                async with self._send_lock:
                    await write_frame(stream, {"id": request_id, "op": op, **fields})
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._pending.pop(request_id, None)
                raise IpcError(f"connection to {self.path} broke: {exc}") from exc
            try:
                return await receive.receive()
            except trio.EndOfChannel:
                raise IpcError(f"connection to {self.path} broke during {op}") from None
        self._pending.pop(request_id, None)
        assert scope.cancelled_caught
        raise IpcError(f"{op} to {self.path} timed out after {timeout} s")

    async def aclose(self) -> None:
        self._closed = True
        if self._stream is not None:
            await self._stream.aclose()


@asynccontextmanager
async def open_client(path: Path) -> AsyncIterator[IpcClient]:
    async with trio.open_nursery() as nursery:
        client = IpcClient(path, nursery)
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
