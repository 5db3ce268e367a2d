"""The quart-trio application: routes, the JSON error format, limits.

Errors are ``{"ok": false, "error": {"code", "message", "details"}}`` with the
status of ``weall.errors.HTTP_STATUS``. Nothing answers 500: an unexpected
failure is logged with its traceback and answered 503 ``unavailable``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import orjson
from quart import Response, g, request
from quart.wrappers import BaseRequestWebsocket
from quart_schema import QuartSchema, RequestSchemaValidationError, document
from quart_trio import QuartTrio
from werkzeug.exceptions import BadHost, HTTPException
from werkzeug.routing import MapAdapter

from weall import __version__
from weall.api import schemas, views
from weall.api.dashboard import register_dashboard
from weall.api.limits import AsgiApp, BodyLimitMiddleware
from weall.api.media import register_media
from weall.api.metrics import register_metrics
from weall.api.openapi import NodeOpenAPIProvider
from weall.api.proxy import TrustedProxies, client_address
from weall.api.ratelimit import RateLimitMiddleware
from weall.api.submit import (
    BATCH_PATH,
    SUBMIT_PATH,
    Reply,
    SubmitCoalescer,
    SubmitEndpoint,
    SubmitService,
)
from weall.config import Config
from weall.errors import (
    HTTP_STATUS,
    StorageError,
    UpstreamError,
)
from weall.follow.relay import relay_submission
from weall.follow.status import follower_health
from weall.follow.upstream import UpstreamClient
from weall.ipc import IpcClient
from weall.protocol.genesis import genesis_info
from weall.protocol.txtypes import GenesisInfo
from weall.storage.health import journal_settings
from weall.storage.reader import ReadPool

__all__ = ["ApiError", "create_app"]

log = logging.getLogger(__name__)
access_log = logging.getLogger("weall.api.access")
T = TypeVar("T")
RouteT = TypeVar("RouteT", bound=Callable[..., Any])

_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}
MEDIA_UPLOAD_PATH = "/v1/media/upload"
# The query string of the paged read routes, as documented in /openapi.json.
_PAGE = schemas.PageQuery


def _doc(
    model: Any, *, query: Any = None, status: int = 200
) -> Callable[[RouteT], RouteT]:
    """Document a read route's response model and query string for ``/openapi.json``."""
    return document(querystring=query, responses={status: (model, None)})


def _wrap_asgi(app: QuartTrio, config: Config, inner: AsgiApp) -> None:
    """Put the limits in front of ``inner``, at the ASGI layer.

    ``inner`` is the Quart app or ``SubmitEndpoint`` in front of it. The rate
    limit runs first, then the body limits.
    """
    body_limits = BodyLimitMiddleware(
        inner,
        default_limit=config.max_request_bytes,
        path_limits={MEDIA_UPLOAD_PATH: config.ipfs_max_upload_bytes},
        body_timeout_s=config.api_body_timeout_s,
    )
    app.asgi_app = RateLimitMiddleware(  # type: ignore[method-assign,assignment]
        body_limits,
        rate_per_s=config.rate_limit_per_s,
        burst=config.rate_limit_burst,
        trusted=TrustedProxies(config.trusted_proxies),
        forwarded_header=config.forwarded_header,
    )


def _schema_errors(exc: RequestSchemaValidationError) -> list[dict[str, Any]]:
    errors = getattr(exc.validation_error, "errors", None)
    if not callable(errors):
        return [{"msg": str(exc.validation_error)[:200]}]
    # The input values are left out: they are the client's own and may be large.
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
        }
        for error in errors()[:20]
    ]


class ApiError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.status = status or HTTP_STATUS.get(code, 400)


def json_response(document: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(document), status=status, content_type="application/json"
    )


def reply_response(reply: Reply) -> Response:
    response = Response(
        reply.body(), status=reply.status, content_type="application/json"
    )
    for name, value in reply.headers:
        response.headers[name] = value
    return response


async def _body() -> bytes:
    data = await request.get_data(cache=False, as_text=False)
    return data.encode() if isinstance(data, str) else data


def error_response(
    code: str, message: str, status: int, details: dict[str, Any] | None = None
) -> Response:
    return json_response(
        {
            "ok": False,
            "error": {"code": code, "message": message, "details": details or {}},
        },
        status,
    )


class NodeReader:
    """Lazy read access: the api may start before the producer created the database."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pool: ReadPool | None = None
        self.genesis: GenesisInfo | None = None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self.pool is None:
            if not self.config.db_path.exists():
                raise ApiError(
                    "unavailable", "the database does not exist yet", status=503
                )
            self.pool = ReadPool(self.config.db_path)
        try:
            return await self.pool.run(fn)
        except StorageError as exc:
            log.warning("read failed: %s", exc)
            raise ApiError(
                "unavailable", "the database cannot be read right now", status=503
            ) from exc

    async def genesis_info(self) -> GenesisInfo:
        if self.genesis is None:

            def load(conn: sqlite3.Connection) -> str | None:
                row = conn.execute(
                    "SELECT value FROM meta WHERE key = 'genesis_json'"
                ).fetchone()
                return None if row is None else str(row[0])

            text = await self.run(load)
            if text is None:
                raise ApiError(
                    "unavailable", "the chain is not initialised yet", status=503
                )
            self.genesis = genesis_info(json.loads(text))
        return self.genesis


def _query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 16:
        raise ApiError("invalid_request", f"{name} must be an integer in {low}..{high}")
    value = int(raw)
    if not low <= value <= high:
        raise ApiError("invalid_request", f"{name} must be an integer in {low}..{high}")
    return value


def _cursor() -> str | None:
    cursor = request.args.get("cursor")
    if cursor is None or cursor == "":
        return None
    if len(cursor) > 200 or not all(c.isalnum() or c in "._-@/" for c in cursor):
        raise ApiError("invalid_request", "cursor is not one this node returned")
    return cursor


def _read_actors(config: Config) -> dict[str, Any]:
    path = config.run_dir / "actors.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


async def _relay(upstream: UpstreamClient, path: str, config: Config) -> Response:
    """Send a submission to a follower's upstream and return its reply unchanged."""
    data = await request.get_data(cache=False, as_text=False)
    body = data.encode() if isinstance(data, str) else data
    scope = cast(dict[str, Any], request.scope)
    client = client_address(
        scope, TrustedProxies(config.trusted_proxies), config.forwarded_header
    )
    try:
        status, reply = await relay_submission(upstream, path, body, client)
    except UpstreamError as exc:
        log.warning("upstream unavailable for %s: %s", path, exc)
        raise ApiError(
            "unavailable",
            "the upstream node is not reachable; retry shortly",
            status=503,
        ) from None
    return Response(reply, status=status, content_type="application/json")


class _BadHostAdapter(MapAdapter):
    """A URL adapter whose every match fails with ``BadHost``."""

    def match(self, *args: Any, **kwargs: Any) -> Any:
        raise BadHost("the Host header is not a valid host name")


class _NodeApp(QuartTrio):
    """QuartTrio that responds 400 to a request with an invalid Host header.

    werkzeug raises ``BadHost`` while it binds the URL map to a Host that has
    no IDNA form (a label of more than 63 characters, an empty label). Quart
    binds the map before any error handler applies, so without this the
    request would fail as an unexpected exception. The adapter returned in
    its place makes routing raise ``BadHost``, and the handler of
    ``HTTPException`` turns that into the JSON error format.
    """

    def create_url_adapter(
        self, request: BaseRequestWebsocket | None
    ) -> MapAdapter | None:
        try:
            return super().create_url_adapter(request)
        except BadHost:
            if request is None:
                raise
            return _BadHostAdapter(
                self.url_map,
                "invalid",
                request.root_path or "/",
                None,
                request.scheme,
                request.path,
                request.method,
            )


def create_app(config: Config, producer: IpcClient) -> QuartTrio:
    app = _NodeApp("weall")
    # By default werkzeug redirects a path with "//" (308, with an HTML body)
    # to a URL built from the client's Host header. Here such a path is not
    # found instead (404 in the JSON error format).
    app.url_map.merge_slashes = False
    # BodyLimitMiddleware enforces the limit of each path first; Quart's own
    # limits stay as a second line at the largest of them.
    app.config["MAX_CONTENT_LENGTH"] = max(
        config.max_request_bytes, config.ipfs_max_upload_bytes
    )
    app.config["BODY_TIMEOUT"] = config.api_body_timeout_s
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,
        info={"title": "WeAll node API", "version": __version__},
        openapi_provider_class=NodeOpenAPIProvider,
    )
    reader = NodeReader(config)
    app.extensions["weall_reader"] = reader

    async def stored_chain_id() -> str | None:
        try:
            return (await reader.genesis_info()).chain_id
        except ApiError:
            return None

    submissions = SubmitService(
        SubmitCoalescer(producer),
        allow_unsigned=config.allow_unsigned_txs and config.mode == "dev",
        chain_id=stored_chain_id,
    )
    # On a follower node, submissions go to the upstream; reads stay local.
    upstream = (
        UpstreamClient(config.upstream_url, timeout_s=15.0, deadline_s=60.0)
        if config.upstream_url
        else None
    )
    if upstream is not None:
        app.after_serving(upstream.aclose)

    @app.errorhandler(ApiError)
    async def on_api_error(exc: ApiError) -> Response:
        return error_response(exc.code, exc.message, exc.status, exc.details)

    @app.errorhandler(RequestSchemaValidationError)
    async def on_schema_error(exc: RequestSchemaValidationError) -> Response:
        return error_response(
            "invalid_request",
            "the request does not match its schema",
            400,
            {"errors": _schema_errors(exc)},
        )

    @app.errorhandler(HTTPException)
    async def on_http_error(exc: HTTPException) -> Response:
        status = exc.code or 400
        code = _HTTP_CODES.get(status, "invalid_request")
        return error_response(code, exc.description or exc.name, status)

    @app.errorhandler(Exception)
    async def on_unexpected(exc: Exception) -> Response:
        log.exception("request failed path=%s", request.path)
        return error_response("unavailable", "internal error; the node logged it", 503)

    @app.before_request
    async def start_timer() -> None:
        g.weall_started = time.perf_counter()

    @app.after_request
    async def log_access(response: Response) -> Response:
        if access_log.isEnabledFor(logging.INFO):
            started = g.get("weall_started")
            elapsed_ms = (
                0.0 if started is None else (time.perf_counter() - started) * 1000
            )
            access_log.info(
                "%s %s %d %.1fms",
                request.method,
                request.path,
                response.status_code,
                elapsed_ms,
            )
        if response.status_code < 400:
            return response
        # An error answered before the request body was read leaves that body
        # on the connection, where the next request would wait behind it, so
        # such a connection is closed after the answer.
        declared = request.headers.get("Content-Length", "0") not in ("", "0") or (
            "Transfer-Encoding" in request.headers
        )
        if declared:
            response.headers["Connection"] = "close"
        return response

    @app.get("/health")
    @_doc(schemas.Health)
    async def health() -> Response:
        actors = _read_actors(config)
        try:
            head = await reader.run(views.head_view)
        except ApiError:
            head = None
        follower = await follower_health(producer) if config.follower else None
        rejected = follower is not None and follower["state"] == "rejected"
        return json_response(
            {
                "ok": head is not None and not rejected,
                **({"follower": follower} if follower is not None else {}),
                "version": __version__,
                "chain_id": config.chain_id,
                "mode": config.mode,
                "height": head["height"] if head else None,
                "tip": head["hash"] if head else None,
                "actors": {name: info.get("state") for name, info in actors.items()},
                "storage": {
                    **await journal_settings(producer, config),
                    "db_path": config.db_path.name,
                },
            }
        )

    @app.get("/v1/readyz")
    @document(
        responses={200: (schemas.Readiness, None), 503: (schemas.Readiness, None)}
    )
    async def readyz() -> Response:
        actors = _read_actors(config)
        states = {name: info.get("state") for name, info in actors.items()}
        ready = bool(states) and all(state == "running" for state in states.values())
        return json_response({"ok": ready, "actors": states}, 200 if ready else 503)

    @app.get("/v1/chain/head")
    @_doc(schemas.ChainHead)
    async def chain_head() -> Response:
        head = await reader.run(views.head_view)
        if head is None:
            raise ApiError("unavailable", "the chain has no blocks yet", status=503)
        return json_response(head)

    @app.get("/v1/state/snapshot")
    @_doc(schemas.Snapshot)
    async def snapshot() -> Response:
        genesis = await reader.genesis_info()
        now = int(time.time() * 1000)
        return json_response(
            await reader.run(lambda conn: views.snapshot_view(conn, genesis, now))
        )

    @app.get("/v1/blocks/<height>")
    @_doc(schemas.Block)
    async def block(height: str) -> Response:
        if not (height.isascii() and height.isdigit()) or len(height) > 15:
            raise ApiError("invalid_request", "height must be a non-negative integer")
        view = await reader.run(lambda conn: views.block_view(conn, int(height)))
        if view is None:
            raise ApiError("not_found", f"no block at height {height}")
        return json_response(view)

    @app.get("/v1/blocks")
    @_doc(schemas.BlocksPage, query=schemas.BlocksQuery)
    async def blocks() -> Response:
        start = _query_int("from", 0, 0, 2**53 - 1)
        limit = _query_int("limit", 20, 1, views.MAX_PAGE)
        return json_response(
            await reader.run(lambda conn: views.blocks_page(conn, start, limit))
        )

    @app.get("/v1/tx/<tx_id>")
    @_doc(schemas.TxStatus)
    async def tx_status(tx_id: str) -> Response:
        if len(tx_id) != 53:
            raise ApiError("not_found", "no such transaction")
        view = await reader.run(lambda conn: views.tx_view(conn, tx_id))
        if view is None:
            raise ApiError("not_found", f"no transaction {tx_id}")
        return json_response(view)

    @app.post("/v1/tx/submit")
    @document(
        request=schemas.Envelope,
        responses={202: (schemas.TxAccepted, None), 200: (schemas.TxDuplicate, None)},
    )
    async def submit() -> Response:
        # On a producer node SubmitEndpoint serves these POSTs before Quart,
        # so this route runs for a follower's relay, and for tests that call
        # the Quart app directly.
        if upstream is not None:
            return await _relay(upstream, SUBMIT_PATH, config)
        return reply_response(await submissions.handle(SUBMIT_PATH, await _body()))

    @app.post("/v1/tx/batch")
    @document(
        request=schemas.BatchRequest, responses={200: (schemas.BatchResult, None)}
    )
    async def batch() -> Response:
        if upstream is not None:
            return await _relay(upstream, BATCH_PATH, config)
        return reply_response(await submissions.handle(BATCH_PATH, await _body()))

    @app.get("/v1/accounts/<account_id>")
    @_doc(schemas.Account)
    async def account(account_id: str) -> Response:
        view = await reader.run(lambda conn: views.account_view(conn, account_id))
        if view is None:
            raise ApiError("not_found", f"no account {account_id[:40]}")
        return json_response(view)

    @app.get("/v1/accounts/<account_id>/posts")
    @_doc(schemas.FeedPage, query=_PAGE)
    async def account_posts(account_id: str) -> Response:
        cursor = _cursor()
        limit = _query_int("limit", 20, 1, views.MAX_PAGE)
        view = await reader.run(
            lambda conn: views.account_posts_page(conn, account_id, cursor, limit)
        )
        if view is None:
            raise ApiError("not_found", f"no account {account_id[:40]}")
        return json_response(view)

    @app.get("/v1/feed")
    @_doc(schemas.FeedPage, query=_PAGE)
    async def feed() -> Response:
        cursor = _cursor()
        limit = _query_int("limit", 20, 1, views.MAX_PAGE)
        return json_response(
            await reader.run(lambda conn: views.feed_page(conn, cursor, limit))
        )

    @app.get("/v1/content/<object_id>")
    @_doc(schemas.ContentView, query=_PAGE)
    async def content(object_id: str) -> Response:
        cursor = _cursor()
        limit = _query_int("limit", 20, 1, views.MAX_PAGE)
        view = await reader.run(
            lambda conn: views.content_view(conn, object_id, cursor, limit)
        )
        if view is None:
            raise ApiError("not_found", f"no post or comment {object_id[:60]}")
        return json_response(view)

    def _record_route(rule: str, kind: str, label: str, model: Any) -> None:
        @_doc(model)
        async def view(object_id: str) -> Response:
            found = await reader.run(
                lambda conn: views.record_view(conn, kind, object_id)
            )
            if found is None:
                raise ApiError("not_found", f"no {label} {object_id[:60]}")
            return json_response(found)

        view.__name__ = f"{kind}_view"
        app.get(rule)(view)

    _record_route(
        "/v1/gov/proposals/<object_id>", "gov_proposal", "proposal", schemas.Proposal
    )
    _record_route("/v1/disputes/<object_id>", "dispute", "dispute", schemas.Dispute)
    _record_route(
        "/v1/poh/requests/<object_id>", "poh_request", "PoH request", schemas.PohRequest
    )

    @app.get("/v1/groups/<group_id>")
    @_doc(schemas.Group, query=schemas.GroupQuery)
    async def group(group_id: str) -> Response:
        limit = _query_int("limit", 100, 1, 1000)
        view = await reader.run(lambda conn: views.group_view(conn, group_id, limit))
        if view is None:
            raise ApiError("not_found", f"no group {group_id[:40]}")
        return json_response(view)

    @app.get("/v1/pins/<pin_id>")
    @_doc(schemas.PinStatus)
    async def pin(pin_id: str) -> Response:
        view = await reader.run(lambda conn: views.pin_view(conn, pin_id))
        if view is None:
            raise ApiError("not_found", f"no pin {pin_id[:60]}")
        return json_response(view)

    register_dashboard(app, reader, config, producer)
    observe_metrics = register_metrics(app, reader, config, producer)

    def observe(
        method: str, route: str, status: int, seconds: float, body: bytes
    ) -> None:
        observe_metrics(method, route, status, seconds, body)
        access_log.info("%s %s %d %.1fms", method, route, status, seconds * 1000)

    # A follower relays submissions to its upstream, which the Quart routes do.
    quart_app = cast("AsgiApp", app.asgi_app)
    if upstream is None:
        _wrap_asgi(app, config, SubmitEndpoint(quart_app, submissions, observe))
    else:
        _wrap_asgi(app, config, quart_app)
    register_media(app, reader, producer, config)
    return app
