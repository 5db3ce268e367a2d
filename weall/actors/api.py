"""The api actor: the HTTP listener (quart-trio served by hypercorn).

Reads go through read-only connections in short transactions; submissions
are forwarded to the producer over its socket. No route changes state except
by forwarding a signed transaction.

On SIGTERM hypercorn stops accepting connections, lets the requests in flight
finish for up to ``DRAIN_TIMEOUT_S`` and closes each connection after its
response. It closes idle keep-alive connections at once, through the idle
timer that it starts after each response; ``FinalSendShield`` keeps that
timer from being lost.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Final, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import run as hypercorn_run
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer

from weall import ipc
from weall.actors._base import stop_event
from weall.actors.cli import DRAIN_GRACE_S
from weall.api.app import create_app
from weall.api.limits import AsgiApp, Message, Receive, Send, apply_connection_limits
from weall.config import Config
from weall.errors import StartupError

if TYPE_CHECKING:
    from hypercorn.typing import Framework

__all__ = ["DRAIN_TIMEOUT_S", "FinalSendShield", "IsolatedTCPServer", "run"]

log = logging.getLogger(__name__)

# Hypercorn cancels requests still running this long after the stop signal.
# It is one second shorter than the actor's grace, so that run() returns by
# itself and the grace never has to cancel it.
DRAIN_TIMEOUT_S: Final = DRAIN_GRACE_S["api"] - 1.0


class FinalSendShield:
    """ASGI middleware that shields the last body message of each response.

    Hypercorn (0.18) starts a connection's keep-alive idle timer from inside
    the ``send`` of the last body message. Quart-trio cancels its request
    scope as soon as hypercorn reports the request done, which happens during
    that same ``send``, so the timer's start was cancelled. The connection
    then had no idle timer: it stayed open for ``read_timeout`` and held each
    stop for the full ``graceful_timeout``.
    """

    def __init__(self, app: AsgiApp) -> None:
        self.app = app

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_last_shielded(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get(
                "more_body", False
            ):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await self.app(scope, receive, send_last_shielded)


class IsolatedTCPServer(TCPServer):
    """hypercorn's handler of one TCP connection, confining its errors to it.

    ``trio.serve_listeners`` ends the whole server when a connection handler
    raises, so a fault in hypercorn's protocol code that a client can trigger
    would stop the api process with every other client's requests. Here such
    an error closes only its own connection and is logged. NOTE: hypercorn
    0.18.0 has such a fault: an HTTP/2 DATA frame for a stream whose response
    was already sent (a body past the limit) raises ``KeyError``.
    """

    errors = 0

    async def run(self) -> None:
        try:
            await super().run()
        except Exception as exc:
            # The base class closed the stream in its ``finally``.
            IsolatedTCPServer.errors += 1
            count = IsolatedTCPServer.errors
            # A client can repeat the error at will, so only every 100th is logged.
            if count == 1 or count % 100 == 0:
                log.warning(
                    "connection closed after an error in the HTTP server count=%d: %r",
                    count,
                    exc,
                )


def _isolate_connections() -> None:
    """Make hypercorn's trio ``serve`` handle each connection with ``IsolatedTCPServer``."""
    # NOTE: hypercorn has no setting for this, so the name that its serve()
    # looks up (hypercorn.trio.run.TCPServer, as of hypercorn 0.18.0) is replaced.
    current = hypercorn_run.TCPServer  # type: ignore[attr-defined]
    if current not in (TCPServer, IsolatedTCPServer):
        log.warning(
            "hypercorn.trio.run.TCPServer is %r, not hypercorn's TCPServer; left "
            "as it is, so an error in one connection may stop the api process",
            current,
        )
        return
    hypercorn_run.TCPServer = IsolatedTCPServer  # type: ignore[attr-defined]


def hypercorn_config(config: Config) -> HypercornConfig:
    hconfig = HypercornConfig()
    hconfig.bind = [config.api_bind]
    # serve() runs one process; workers > 1 only makes hypercorn set
    # SO_REUSEPORT, so that the supervisor's api processes share the port.
    hconfig.workers = config.api_workers
    hconfig.graceful_timeout = DRAIN_TIMEOUT_S
    hconfig.keep_alive_timeout = 75
    hconfig.read_timeout = 30
    hconfig.h11_max_incomplete_size = 64 * 1024
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("weall.api.hypercorn")
    apply_connection_limits(hconfig, config)
    return hconfig


def _check_bind(config: Config) -> None:
    """Raise ``StartupError`` with one line when the api's address cannot be bound."""
    family = socket.AF_INET6 if ":" in config.api_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if config.api_workers > 1:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((config.api_host, config.api_port))
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {config.api_bind}: {exc.strerror}; "
                "set WEALL_API_PORT (or PORT) to a free port"
            ) from None


async def run(
    config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    _check_bind(config)
    _isolate_connections()
    async with ipc.open_client(config.producer_socket) as producer:
        app = create_app(config, producer)
        hconfig = hypercorn_config(config)
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                lambda task_status: serve(
                    cast("Framework", FinalSendShield(cast(AsgiApp, app))),
                    hconfig,
                    shutdown_trigger=stop_event().wait,
                    task_status=task_status,
                    mode="asgi",
                )
            )
            log.info("api listening on %s", ", ".join(binds))
            task_status.started()
