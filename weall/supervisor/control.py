"""The supervisor's control socket: the server side and the client calls.

Requests and replies are ``weall.ipc`` frames. Operations:

``{"op": "status"}``
    ``{"ok": true, "state": "running", "pid": ..., "uptime_s": ...,
    "actors": [{"name", "state", "pid", "uptime_s", "restarts",
    "started_at_ms", "last_exit"}, ...]}`` with actors in start order.
``{"op": "restart", "actor": NAME}``
    restarts that actor alone and replies once its new process is ready or
    failed to start: ``{"ok": true, "actor": {...}}``.
``{"op": "stop"}``
    begins the ordered stop and replies at once: ``{"ok": true}``.

An error reply is ``{"ok": false, "error": {"code": ..., "message": ...}}``
with code ``not_found``, ``conflict`` or ``invalid_request``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from weall import ipc
from weall.errors import StartupError, WeallError

if TYPE_CHECKING:
    from weall.supervisor.supervisor import Supervisor

__all__ = [
    "ControlError",
    "SupervisorNotRunning",
    "call_supervisor",
    "hold_control_lock",
    "serve_control",
    "wait_supervisor_gone",
]

log = logging.getLogger(__name__)


class SupervisorNotRunning(WeallError):
    """No supervisor accepts connections on the control socket."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(
            f"no supervisor is running: cannot connect to {path} ({detail})"
        )


class ControlError(WeallError):
    """The supervisor rejected a control request."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


@contextlib.contextmanager
def hold_control_lock(socket_path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the control socket for as long as it is served.

    ``weall.ipc.serve`` removes a leftover socket file before it binds, so
    without this lock a second supervisor would silently take over the socket
    of a running one.

    Raises:
        StartupError: another process holds the lock.
    """
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = socket_path.with_name(socket_path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StartupError(
                f"another supervisor is running: {lock_path} is locked; "
                "stop it with `weall stop`, or give this one its own WEALL_CONTROL_SOCKET"
            ) from None
        yield
    finally:
        os.close(fd)


async def serve_control(
    supervisor: Supervisor,
    path: Path,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve control requests for ``supervisor`` on the Unix socket ``path``."""

    async def handle(request: dict[str, Any]) -> dict[str, Any]:
        return await _handle_request(supervisor, request)

    try:
        await ipc.serve(path, handle, task_status=task_status)
    finally:
        _remove_socket_file(path)


def _remove_socket_file(path: Path) -> None:
    # NOTE: ipc.serve removes the socket file only when its listener closes
    # without a checkpoint raising Cancelled, so this makes sure. The control
    # lock guarantees that the file belongs to this supervisor.
    path.unlink(missing_ok=True)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


async def _handle_request(
    supervisor: Supervisor, request: dict[str, Any]
) -> dict[str, Any]:
    op = request.get("op")
    if op == "status":
        return {"ok": True, **supervisor.statistics().as_json()}
    if op == "stop":
        log.info("stop requested over the control socket")
        supervisor.request_stop("control request")
        return {"ok": True}
    if op == "restart":
        return await _handle_restart(supervisor, request.get("actor"))
    return _error(
        "invalid_request", f"unknown op {op!r} (expected status, restart or stop)"
    )


async def _handle_restart(supervisor: Supervisor, name: object) -> dict[str, Any]:
    known = ", ".join(supervisor.actor_names)
    if not isinstance(name, str) or name not in supervisor.actor_names:
        return _error(
            "not_found", f"unknown actor {name!r} (this supervisor runs {known})"
        )
    try:
        status = await supervisor.restart_actor(name)
    except RuntimeError as exc:
        return _error("conflict", f"cannot restart {name}: {exc}")
    return {"ok": True, "actor": asdict(status)}


async def call_supervisor(
    path: Path, op: str, *, timeout_s: float = 10.0, **fields: Any
) -> dict[str, Any]:
    """Send one control request and return the reply of a successful one.

    Raises:
        SupervisorNotRunning: nothing listens on ``path``.
        ControlError: the supervisor rejected the request.
        IpcError: the connection broke, or no reply came within ``timeout_s``.
    """
    await _probe(path)
    async with ipc.open_client(path) as client:
        reply = await client.call(op, timeout=timeout_s, **fields)
    if not reply.get("ok"):
        error = reply.get("error") or {}
        raise ControlError(
            str(error.get("code", "unavailable")), str(error.get("message", reply))
        )
    return reply


async def _probe(path: Path) -> None:
    try:
        stream = await trio.open_unix_socket(str(path))
    except OSError as exc:
        raise SupervisorNotRunning(path, exc.strerror or str(exc)) from None
    await stream.aclose()


async def wait_supervisor_gone(path: Path, timeout_s: float) -> bool:
    """Poll until nothing listens on ``path``; return False if ``timeout_s`` passed first."""
    with trio.move_on_after(timeout_s):
        while True:
            try:
                await _probe(path)
            except SupervisorNotRunning:
                return True
            await trio.sleep(0.1)
    return False
