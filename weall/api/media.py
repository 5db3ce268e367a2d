"""Media routes: session-gated upload, content download, and operators' pins.

``POST /v1/media/upload``
    The body is the file and ``Content-Type`` its media type. The request is
    session-gated: the session key's scope has ``IPFS_PIN_REQUEST`` and the
    uploader passes that type's gate. The body hash in the signed lines is
    the hash form of the body's SHA-256. Everything but the signature is checked before the body
    is read. The body is then streamed to the node's IPFS backend unpinned
    while it is hashed. Only after the signature verifies is the file pinned
    (``WEALL_IPFS_PIN_ON_UPLOAD=1``) and recorded for downloads. Then the
    producer submits an ``IPFS_PIN_REQUEST`` on the uploader's behalf
    (``WEALL_MEDIA_AUTO_PIN_REQUEST=1``). A body over
    ``WEALL_IPFS_MAX_UPLOAD_BYTES`` gets 413 ``too_large``.
``GET /v1/media/{cid}``
    The content, streamed from the backend, with the recorded media type and
    ``Content-Length``. Only content with an upload record or a pin request
    is served, so bytes of a rejected upload are never offered.
``GET /v1/media/{cid}/status``
    The replication status of the CID's pin: targets, confirmations,
    shortfall, durable.
``GET /v1/operators/{id}/pins``
    The pins assigned to an operator, paged, for pinners that run apart
    from the node.

Both ``{cid}`` routes accept any spelling of a CID (CIDv0, any multibase)
and look up its CIDv1 base32 form, the one the state and the store use.

Quart appends every piece of a request body that the server hands it to one
buffer, however far the route lags behind. So ``UploadFlowControl`` (an ASGI
middleware on the upload path) takes the next piece from the server only
while the route has consumed all but ``UPLOAD_BUFFER_BYTES`` of what it was
given. The server then stops reading the socket, and TCP slows the client.
The api process keeps about that buffer, a copy of it and the server's queue
of a few pieces in memory, whatever the body's size.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import orjson
import trio
from pydantic import BaseModel, ConfigDict
from quart import Response, request
from quart_schema import document
from werkzeug.exceptions import RequestEntityTooLarge

from weall.api import views
from weall.api.limits import AsgiApp, Message, Receive, Send
from weall.api.schemas import ErrorBody, PinStatus
from weall.api.session import (
    REPLAY_FILE_NAME,
    ReplayCache,
    SessionError,
    SessionHeaders,
    verify_session,
)
from weall.errors import HTTP_STATUS, EncodingError, IpcError, IpfsError
from weall.ipfs import AddResult, IpfsBackend, open_backend
from weall.ipfs.unixfs import parse_cid
from weall.media.chain import MAX_PINS_PAGE, operator_pins_view
from weall.media.records import (
    DEFAULT_MEDIA_TYPE,
    MediaRecord,
    MediaRecords,
    parse_media_type,
)
from weall.protocol.encoding import decode_sig, encode_hash, is_account_id
from weall.protocol.rules.storage import pin_id_for_cid
from weall.storage import queries

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from weall.api.app import NodeReader
    from weall.config import Config
    from weall.ipc import IpcClient

__all__ = [
    "UPLOAD_BUFFER_BYTES",
    "MediaService",
    "OperatorPins",
    "UploadFlowControl",
    "UploadResult",
    "register_media",
]

log = logging.getLogger(__name__)

UPLOAD_SCOPE: Final = "IPFS_PIN_REQUEST"
UPLOAD_PATH: Final = "/v1/media/upload"
# Body bytes that an upload's route may have been given and not yet consumed.
UPLOAD_BUFFER_BYTES: Final = 1024 * 1024
# The key of an upload's ``_UploadFlow`` in the ASGI scope.
_FLOW_SCOPE_KEY: Final = "weall.upload_flow"
SUBMIT_TIMEOUT_S: Final = 30.0
DEFAULT_PINS_PAGE: Final = 100
_PIN_ID_RE: Final = re.compile(r"b[a-z2-7]{52}")
# Served media may be any type a user chose, so a browser must neither sniff
# it nor run it with the node's origin.
_MEDIA_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "public, max-age=31536000, immutable",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Model):
    code: str
    message: str
    details: dict[str, Any]


class UploadResult(_Model):
    """Response body of an upload: the content id and, when requested, the pin request."""

    cid: str
    size_bytes: int
    pin_request_tx_id: str | None = None
    pin_id: str | None = None
    pin_request_error: ErrorDetail | None = None


class OperatorPin(_Model):
    pin_id: str
    cid: str
    size_bytes: int
    assigned_height: int
    ok: bool | None


class OperatorPins(_Model):
    """One page of the pins assigned to an operator account."""

    operator: str
    active: bool
    capacity_bytes: int | None
    used_bytes: int | None
    height: int
    pins: list[OperatorPin]
    next_cursor: str | None


class OperatorPinsQuery(_Model):
    cursor: str | None = None
    limit: int | None = None


async def _read_file(path: Path, chunk_bytes: int = 256 * 1024) -> AsyncIterator[bytes]:
    async with await trio.open_file(path, "rb") as handle:
        while piece := await handle.read(chunk_bytes):
            yield piece


class _BodyTooLargeError(Exception):
    pass


class _UploadFlow:
    """Counts the body bytes of one upload given to the app and consumed by the route."""

    def __init__(self, buffer_bytes: int) -> None:
        self.buffer_bytes = buffer_bytes
        self.given = 0
        self.consumed = 0
        self._waiters = trio.lowlevel.ParkingLot()

    async def wait_for_room(self) -> None:
        while self.given - self.consumed >= self.buffer_bytes:
            await self._waiters.park()

    def consume(self, count: int) -> None:
        self.consumed += count
        self._waiters.unpark_all()


class UploadFlowControl:
    """ASGI middleware that hands an upload's body to the app no faster than the route consumes it.

    Requests to other paths pass through untouched. A route that responds
    without reading the body ends the request, which cancels the wait.
    """

    def __init__(self, app: AsgiApp, buffer_bytes: int = UPLOAD_BUFFER_BYTES) -> None:
        self.app = app
        self.buffer_bytes = buffer_bytes

    async def __call__(
        self, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        if scope["type"] != "http" or scope.get("path") != UPLOAD_PATH:
            await self.app(scope, receive, send)
            return
        flow = _UploadFlow(self.buffer_bytes)

        async def receive_when_consumed() -> Message:
            await flow.wait_for_room()
            message = await receive()
            if message["type"] == "http.request":
                flow.given += len(message.get("body", b""))
            return message

        await self.app({**scope, _FLOW_SCOPE_KEY: flow}, receive_when_consumed, send)


def _error(
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    status: int | None = None,
) -> Response:
    body = {
        "ok": False,
        "error": {"code": code, "message": message, "details": details or {}},
    }
    return Response(
        orjson.dumps(body),
        status=status or HTTP_STATUS.get(code, 400),
        content_type="application/json",
    )


def _json(document: dict[str, Any]) -> Response:
    return Response(orjson.dumps(document), status=200, content_type="application/json")


def _session_error(exc: SessionError) -> Response:
    # Every failure of the request is a 401, the gate's tier included; a
    # replay cache that cannot take the request is the node's fault (503).
    details = (
        None if exc.retry_after_s is None else {"retry_after_s": exc.retry_after_s}
    )
    response = _error(exc.code, exc.message, details, status=exc.status)
    if exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def _ipfs_error(exc: IpfsError) -> Response:
    if exc.code == "storage_full":
        return _error("storage_full", "the node's IPFS store is full; retry later")
    if exc.code == "not_found":
        return _error("not_found", exc.message)
    if exc.code == "invalid_cid":
        return _error("invalid_request", exc.message)
    return _error("unavailable", f"the IPFS backend failed: {exc.code}", status=503)


def _signed_target() -> str:
    """Return the path with its query string as the client sent them."""
    scope: dict[str, Any] = dict(request.scope)
    raw_path: bytes = scope.get("raw_path") or request.path.encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    target = raw_path.decode("latin-1")
    return f"{target}?{query.decode('latin-1')}" if query else target


def _session_records(
    conn: sqlite3.Connection, account: str, pubkey: str
) -> tuple[dict[str, Any] | None, bool, dict[str, Any] | None]:
    state = queries.SqliteState(conn)
    revoked = state.get("session_revoked", f"{account}/{pubkey}") is not None
    return state.get("account", account), revoked, state.get("chain", "params")


def _existing_pin(conn: sqlite3.Connection, cid: str) -> str | None:
    return pin_id_for_cid(queries.SqliteState(conn), cid)


class MediaService:
    """The media routes' state: the IPFS backend, upload records and replay cache."""

    def __init__(self, config: Config, reader: NodeReader, producer: IpcClient) -> None:
        self.config = config
        self.reader = reader
        self.producer = producer
        self.records = MediaRecords(config.data_dir / "media")
        self.replay = ReplayCache(config.run_dir / REPLAY_FILE_NAME)
        self._backend: IpfsBackend | None = None
        self._stack = AsyncExitStack()
        self._lock = trio.Lock()

    async def backend(self) -> IpfsBackend:
        """Open the backend on first use, so that the app starts without IPFS."""
        async with self._lock:
            if self._backend is None:
                self._backend = await self._stack.enter_async_context(
                    open_backend(self.config)
                )
            return self._backend

    async def aclose(self) -> None:
        self.replay.close()
        async with self._lock:
            self._backend = None
            await self._stack.aclose()

    async def upload(self) -> Response:
        gate = await self._check_session()
        if isinstance(gate, Response):
            return gate
        account, check = gate
        try:
            media_type = parse_media_type(request.headers.get("Content-Type"))
        except ValueError as exc:
            return _error("unsupported_media_type", str(exc))
        # The body goes to a spool file first: the signature covers its hash,
        # so nothing reaches the store (which keeps every block it is given)
        # before the signature verifies.
        spool_dir = self.config.data_dir / "tmp"
        spool = spool_dir / f"upload-{secrets.token_hex(8)}"
        digest = hashlib.sha256()
        try:
            try:
                await trio.Path(spool_dir).mkdir(parents=True, exist_ok=True)
                async with await trio.open_file(spool, "wb") as handle:
                    async for piece in self._hashed_body(digest):
                        await handle.write(piece)
            except (_BodyTooLargeError, RequestEntityTooLarge):
                limit = self.config.ipfs_max_upload_bytes
                return _error(
                    "too_large",
                    f"the request body exceeds {limit} bytes",
                    {"max_bytes": limit},
                )
            except OSError as exc:
                log.warning(
                    "media upload not spooled account=%s error=%s", account, exc
                )
                return _error(
                    "storage_full" if exc.errno == errno.ENOSPC else "unavailable",
                    "the upload could not be stored",
                    status=503,
                )
            try:
                check(body_hash=encode_hash(digest.digest()), replay=self.replay)
            except SessionError as exc:
                log.info("media upload rejected account=%s code=%s", account, exc.code)
                return _session_error(exc)
            try:
                added = await (await self.backend()).add(_read_file(spool), pin=False)
            except IpfsError as exc:
                log.warning("media upload not stored account=%s error=%s", account, exc)
                return _ipfs_error(exc)
        finally:
            with contextlib.suppress(OSError):
                await trio.Path(spool).unlink()
        return await self._accept(added, media_type, account)

    async def _check_session(self) -> Response | tuple[str, Callable[..., Any]]:
        """Check every part of the session gate that does not need the body.

        Returns the 401 response, or the account and the check to run once
        the body's hash is known.
        """
        try:
            headers = SessionHeaders.from_headers(request.headers)
            decode_sig(headers.signature, code="session_bad_signature")
        except SessionError as exc:
            return _session_error(exc)
        except EncodingError as exc:
            return _error(exc.code, exc.message, status=401)
        account, revoked, params = await self.reader.run(
            lambda conn: _session_records(conn, headers.account, headers.pubkey)
        )
        if params is None:
            return _error("unavailable", "the chain is not initialised yet", status=503)
        check = partial(
            verify_session,
            headers,
            account=account,
            revoked=revoked,
            required_scope=UPLOAD_SCOPE,
            params=params,
            method="POST",
            path_with_query=_signed_target(),
        )
        try:
            # The signature covers the body's hash, so it cannot verify yet
            # and its failure is ignored here. Without a replay cache this
            # check records nothing.
            check(body_hash="", replay=None)
        except SessionError as exc:
            if exc.code != "session_bad_signature":
                return _session_error(exc)
        return headers.account, check

    async def _hashed_body(self, digest: Any) -> AsyncIterator[bytes]:
        body = request.body
        flow = request.scope.get(_FLOW_SCOPE_KEY)
        limit = self.config.ipfs_max_upload_bytes
        received = 0
        async for piece in body:
            received += len(piece)
            if received > limit:
                raise _BodyTooLargeError
            digest.update(piece)
            yield piece
            # The caller has stored the piece, so the next may come.
            if isinstance(flow, _UploadFlow):
                flow.consume(len(piece))

    async def _accept(
        self, added: AddResult, media_type: str, uploader: str
    ) -> Response:
        """Pin, record and request a pin for an upload whose signature verified."""
        try:
            if self.config.ipfs_pin_on_upload:
                await (await self.backend()).pin(added.cid)
            await self.records.put(
                MediaRecord(
                    cid=added.cid,
                    content_type=media_type,
                    size_bytes=added.size,
                    uploader=uploader,
                    uploaded_at_ms=int(time.time() * 1000),
                )
            )
        except IpfsError as exc:
            log.warning("media upload not pinned cid=%s error=%s", added.cid, exc)
            return _ipfs_error(exc)
        except OSError as exc:
            log.error("media record not written cid=%s error=%s", added.cid, exc)
            return _error(
                "unavailable",
                "the upload could not be recorded; retry later",
                status=503,
            )
        document: dict[str, Any] = {"cid": added.cid, "size_bytes": added.size}
        if self.config.media_auto_pin_request:
            document.update(await self._request_pin(added, uploader))
        log.info(
            "media uploaded cid=%s size_bytes=%d account=%s content_type=%s pinned=%s pin_request_tx_id=%s",
            added.cid,
            added.size,
            uploader,
            media_type,
            self.config.ipfs_pin_on_upload,
            document.get("pin_request_tx_id"),
        )
        return _json(document)

    async def _request_pin(self, added: AddResult, owner: str) -> dict[str, Any]:
        """Have the producer request a pin on the uploader's behalf; return the response fields."""
        existing = await self.reader.run(lambda conn: _existing_pin(conn, added.cid))
        if existing is not None:
            return {"pin_id": existing}
        payload = {"cid": added.cid, "size_bytes": added.size, "on_behalf_of": owner}
        try:
            answer = await self.producer.call(
                "system_tx",
                timeout=SUBMIT_TIMEOUT_S,
                tx_type="IPFS_PIN_REQUEST",
                payload=payload,
            )
        except IpcError as exc:
            log.warning("pin request not submitted cid=%s error=%s", added.cid, exc)
            answer = {
                "ok": False,
                "error": {
                    "code": "unavailable",
                    "message": "the producer is not reachable; submit IPFS_PIN_REQUEST yourself",
                },
            }
        result = answer.get("result") if answer.get("ok") else answer
        fields = _pin_request_fields(result if isinstance(result, dict) else {})
        if "pin_request_error" in fields:
            log.warning(
                "pin request rejected cid=%s code=%s",
                added.cid,
                fields["pin_request_error"]["code"],
            )
        return fields

    async def download(self, cid_text: str) -> Response:
        cid = _normalized_cid(cid_text)
        if isinstance(cid, Response):
            return cid
        record = await self.records.get(cid)
        if (
            record is None
            and await self.reader.run(lambda conn: _existing_pin(conn, cid)) is None
        ):
            return _error("not_found", f"no media {cid}")
        pieces = (await self.backend()).cat(cid)
        try:
            first = await pieces.__anext__()
        except StopAsyncIteration:
            first = b""
        except IpfsError as exc:
            await _close(pieces)
            if exc.code != "not_found":
                log.warning("media read failed cid=%s error=%s", cid, exc)
            return _ipfs_error(exc)
        headers = {**_MEDIA_HEADERS, "ETag": f'"{cid}"'}
        if record is not None:
            headers["Content-Length"] = str(record.size_bytes)
        content_type = DEFAULT_MEDIA_TYPE if record is None else record.content_type
        response = Response(
            _stream(cid, first, pieces),
            status=200,
            headers=headers,
            content_type=content_type,
        )
        # Quart's RESPONSE_TIMEOUT would cut a long download short.
        response.timeout = None
        return response

    async def status(self, cid_text: str) -> Response:
        cid = _normalized_cid(cid_text)
        if isinstance(cid, Response):
            return cid
        view = await self.reader.run(lambda conn: views.media_status_view(conn, cid))
        if view is None:
            return _error("not_found", f"no pin request for {cid}")
        return _json(view)

    async def operator_pins(self, operator: str) -> Response:
        if not is_account_id(operator):
            return _error("invalid_request", f"{operator[:40]!r} is not an account id")
        cursor = request.args.get("cursor") or None
        if cursor is not None and not _PIN_ID_RE.fullmatch(cursor):
            return _error(
                "invalid_request", "cursor must be a pin id that this route returned"
            )
        raw_limit = request.args.get("limit") or str(DEFAULT_PINS_PAGE)
        limit = int(raw_limit) if raw_limit.isdigit() and len(raw_limit) <= 6 else 0
        if not 1 <= limit <= MAX_PINS_PAGE:
            return _error(
                "invalid_request", f"limit must be an integer in 1..{MAX_PINS_PAGE}"
            )
        view = await self.reader.run(
            lambda conn: operator_pins_view(conn, operator, cursor, limit)
        )
        if view is None:
            return _error("not_found", f"no account {operator}")
        return _json(view)


def _normalized_cid(text: str) -> str | Response:
    """Return the CIDv1 base32 form of ``text``, or a 400 response for text that is no CID."""
    try:
        return parse_cid(text)
    except IpfsError:
        return _error("invalid_request", f"{text[:80]!r} is not a CID")


def _pin_request_fields(result: dict[str, Any]) -> dict[str, Any]:
    """Turn the producer's admission result into the pin fields of the upload response."""
    if result.get("ok"):
        return {"pin_request_tx_id": str(result["tx_id"])}
    error = result.get("error")
    error = error if isinstance(error, dict) else {}
    details = error.get("details")
    details = details if isinstance(details, dict) else {}
    fields: dict[str, Any] = {
        "pin_request_error": {
            "code": str(error.get("code", "unavailable")),
            "message": str(error.get("message", "")),
            "details": details,
        }
    }
    if isinstance(details.get("pin_id"), str):
        fields["pin_id"] = details["pin_id"]
    return fields


async def _stream(
    cid: str, first: bytes, pieces: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for piece in pieces:
            yield piece
    except IpfsError as exc:
        # NOTE: the status line is sent already, so the client sees a body
        # shorter than Content-Length and the connection closes.
        log.warning("media stream broke cid=%s error=%s", cid, exc)
    finally:
        await _close(pieces)


async def _close(pieces: AsyncIterator[bytes]) -> None:
    close = getattr(pieces, "aclose", None)
    if close is not None:
        await close()


def register_media(
    app: QuartTrio, reader: NodeReader, producer: IpcClient, config: Config
) -> None:
    """Add the media routes to ``app``; the IPFS backend opens at the first upload or download."""
    service = MediaService(config, reader, producer)
    app.extensions["weall_media"] = service
    app.after_serving(service.aclose)
    app.asgi_app = UploadFlowControl(  # type: ignore[method-assign,assignment]
        cast("AsgiApp", app.asgi_app)
    )

    def route(rule: str, method: str, **doc: Any) -> Callable[[Any], Any]:
        def decorate(view: Any) -> Any:
            return getattr(app, method)(rule)(document(**doc)(view) if doc else view)

        return decorate

    @route(
        UPLOAD_PATH,
        "post",
        responses={200: (UploadResult, None), 415: (ErrorBody, None)},
    )
    async def media_upload() -> Response:
        return await service.upload()

    @route("/v1/media/<cid>", "get")
    async def media_content(cid: str) -> Response:
        return await service.download(cid)

    @route("/v1/media/<cid>/status", "get", responses={200: (PinStatus, None)})
    async def media_status(cid: str) -> Response:
        return await service.status(cid)

    @route(
        "/v1/operators/<account_id>/pins",
        "get",
        querystring=OperatorPinsQuery,
        responses={200: (OperatorPins, None)},
    )
    async def operator_pins(account_id: str) -> Response:
        return await service.operator_pins(account_id)
