"""Runtime shared by every actor process: logging, signals, heartbeats, exit codes.

An actor module exposes ``async def run(config, *, task_status)`` and calls
``task_status.started()`` once it serves. ``run_actor`` runs it under Trio and
reports to the supervisor over the status pipe whose file descriptor the
supervisor passes in ``WEALL_ACTOR_STATUS_FD``. Each report is one JSON line:

``{"event": "ready"}``
    ``run`` called ``task_status.started()``.
``{"event": "heartbeat"}``
    sent every ``config.heartbeat_interval_s`` from start-up to exit, by a Trio
    task, so it also stops when sync code blocks the event loop.
``{"event": "stopping"}``
    the actor received SIGTERM or SIGINT, or ``run`` returned.
``{"event": "failed", "message": "..."}``
    ``run`` raised ``StartupError`` or ``ConfigError``; the message is the
    error's one line. The exit code 78 follows.

Without ``WEALL_ACTOR_STATUS_FD`` (``weall actor NAME`` by hand) the actor
only logs. When the supervisor goes away, the next write to the pipe fails
and the actor stops as if it had received SIGTERM. So an actor outlives its
supervisor by at most one heartbeat interval plus its grace, unless ``run``
shields itself from cancellation.

Stopping: the first SIGTERM or SIGINT sets ``stop_event()``, which ``run``
may watch to drain (the api passes it to hypercorn as ``shutdown_trigger``).
``grace_s`` seconds later ``run`` is cancelled. A second signal cancels it at
once, except that a supervised actor ignores signals within one second of the
first. Heroku sends SIGTERM to every process of a dyno, possibly more than
once (Dev Center, "Dyno Shutdown Behavior"), and the supervisor may send its
own SIGTERM right after. None of these may cut the drain short.

Exit codes: 0 after a stop or when ``run`` returns, 1 when ``run`` raises,
78 (``EX_CONFIG``) when it raises ``StartupError`` or ``ConfigError``.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import orjson
import trio

from weall import __version__, logs
from weall.errors import ConfigError, StartupError

if TYPE_CHECKING:
    from weall.config import Config

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "STATUS_FD_ENV",
    "ActorMain",
    "run_actor",
    "stop_event",
]

STATUS_FD_ENV: Final = "WEALL_ACTOR_STATUS_FD"
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 78

# ``async def run(config, *, task_status=trio.TASK_STATUS_IGNORED) -> None``
ActorMain = Callable[..., Awaitable[None]]

# Maximum seconds spent on the last status report before the actor exits.
_FINAL_REPORT_S: Final = 1.0
# A supervised actor takes signals this soon after the first as duplicates.
_DUPLICATE_SIGNAL_S: Final = 1.0

_current_stop: trio.Event | None = None


def stop_event() -> trio.Event:
    """Return the event that is set when this actor is asked to stop.

    Raises:
        RuntimeError: called outside ``run_actor``.
    """
    if _current_stop is None:
        raise RuntimeError("stop_event() is only available inside run_actor()")
    return _current_stop


class _StatusChannel:
    """The write end of the status pipe to the supervisor, if there is one."""

    def __init__(self, fd: int | None, log: logging.Logger) -> None:
        # FdStream makes the fd non-blocking: a full pipe (a stopped supervisor)
        # then blocks only the task that writes, never the event loop.
        self._stream = trio.lowlevel.FdStream(fd) if fd is not None else None
        self._lock = trio.Lock()
        self._log = log
        # Set when the supervisor closed its end, as opposed to this process.
        self.broken = False

    @property
    def connected(self) -> bool:
        return self._stream is not None

    async def send(self, event: str, **fields: str) -> bool:
        """Send one event; return False when there is no supervisor to send to."""
        if self._stream is None:
            return False
        line = orjson.dumps({"event": event, **fields}) + b"\n"
        async with self._lock:
            if self._stream is None:
                return False
            try:
                await self._stream.send_all(line)
            except trio.BrokenResourceError:
                self._log.warning("status pipe closed; the supervisor is gone")
                self.broken = True
                await self.aclose()
                return False
            except trio.ClosedResourceError:
                return False
        return True

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def aclose_after_sends(self, timeout_s: float) -> None:
        """Close once a send in progress has finished, or after ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            async with self._lock:
                pass
        await self.aclose()


def _take_status_fd(log: logging.Logger) -> int | None:
    """Take the status pipe fd out of the environment, so children never see it."""
    raw = os.environ.pop(STATUS_FD_ENV, None)
    if raw is None:
        return None
    try:
        fd = int(raw)
        os.fstat(fd)
    except (ValueError, OSError):
        log.warning(
            "ignoring invalid %s=%r; status reports are off", STATUS_FD_ENV, raw
        )
        return None
    os.set_inheritable(fd, False)
    return fd


class _Runtime:
    """State of one ``run_actor`` call inside ``trio.run``."""

    def __init__(self, config: Config, grace_s: float, log: logging.Logger) -> None:
        self.config = config
        self.grace_s = grace_s
        self.log = log
        self.status_fd = _take_status_fd(log)
        self.status = _StatusChannel(None, log)
        self.stop = trio.Event()
        self.run_scope = trio.CancelScope()
        self.hurried = False
        self.started_at = time.monotonic()
        self._services: trio.Nursery | None = None
        self._stopping_reported = False

    async def main(self, run: ActorMain) -> None:
        global _current_stop
        _current_stop = self.stop
        self.status = _StatusChannel(self.status_fd, self.log)
        async with trio.open_nursery() as services:
            self._services = services
            await services.start(self._handle_signals)
            services.start_soon(self._send_heartbeats)
            with self.run_scope:
                try:
                    async with trio.open_nursery() as actor_nursery:
                        await actor_nursery.start(run, self.config)
                        self.log.info(
                            "ready start_s=%.3f", time.monotonic() - self.started_at
                        )
                        await self.status.send("ready")
                except BaseException as exc:
                    await self._report_failure(exc)
                    raise
            if self.run_scope.cancelled_caught and not self.hurried:
                self.log.warning(
                    "run() did not return within grace_s=%s, cancelled", self.grace_s
                )
            # Bounded, so that a supervisor that reads nothing (SIGSTOPped)
            # cannot keep the actor from exiting.
            with trio.move_on_after(_FINAL_REPORT_S):
                await self._report_stopping()
            await self.status.aclose_after_sends(_FINAL_REPORT_S)
            services.cancel_scope.cancel()

    async def _report_failure(self, exc: BaseException) -> None:
        """Send the message of a rejected start, so the supervisor can show it."""
        failure = _config_failure(exc)
        if failure is None:
            return
        message = " ".join(str(failure).split())
        # Shielded, because the failure may come while run() is being cancelled.
        with trio.move_on_after(_FINAL_REPORT_S) as scope:
            scope.shield = True
            await self.status.send("failed", message=message)

    async def _report_stopping(self) -> None:
        """Send the stopping event once, whichever of the signal or the exit comes first."""
        if self._stopping_reported:
            return
        self._stopping_reported = True
        await self.status.send("stopping")

    def request_stop(self, reason: str) -> None:
        """Set the stop event and cancel ``run`` once the grace has passed."""
        if self.stop.is_set():
            return
        self.log.info("stopping %s grace_s=%s", reason, self.grace_s)
        self.stop.set()
        self.run_scope.deadline = min(
            self.run_scope.deadline, trio.current_time() + self.grace_s
        )

    async def _handle_signals(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            first_at: float | None = None
            async for signum in signals:
                name = signal.Signals(signum).name
                now = trio.current_time()
                if first_at is None:
                    first_at = now
                    self.request_stop(f"signal={name}")
                    # In its own task, so that a full pipe cannot delay the
                    # handling of a second signal.
                    assert self._services is not None
                    self._services.start_soon(self._report_stopping)
                elif self.status.connected and now - first_at < _DUPLICATE_SIGNAL_S:
                    self.log.info("ignoring repeated signal=%s while stopping", name)
                else:
                    self.log.warning("second signal=%s, cancelling at once", name)
                    self.hurried = True
                    self.run_scope.cancel()

    async def _send_heartbeats(self) -> None:
        if not self.status.connected:
            return
        while True:
            if not await self.status.send("heartbeat"):
                if self.status.broken:
                    self.request_stop("reason=supervisor-gone")
                return
            await trio.sleep(self.config.heartbeat_interval_s)


def _leaf_exceptions(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        leaves: list[BaseException] = []
        for inner in exc.exceptions:
            leaves.extend(_leaf_exceptions(inner))
        return leaves
    return [exc]


def _config_failure(exc: BaseException) -> BaseException | None:
    """Return the ``StartupError`` or ``ConfigError`` inside ``exc``, if any."""
    for leaf in _leaf_exceptions(exc):
        if isinstance(leaf, (StartupError, ConfigError)):
            return leaf
    return None


def _exit_code_for(exc: BaseException, log: logging.Logger) -> int:
    """Log a failure of ``trio.run`` according to its kind and return the exit code."""
    failure = _config_failure(exc)
    if failure is not None:
        log.error("startup failed: %s", failure)
        return EXIT_CONFIG
    leaves = [
        leaf for leaf in _leaf_exceptions(exc) if not isinstance(leaf, trio.Cancelled)
    ]
    for leaf in leaves:
        if isinstance(leaf, SystemExit):
            return leaf.code if isinstance(leaf.code, int) else EXIT_FAILURE
    for leaf in leaves:
        if isinstance(leaf, KeyboardInterrupt):
            # SIGINT before the signal receiver was installed: a stop request.
            return EXIT_OK
    first = leaves[0] if leaves else exc
    # One failure: its own traceback reads better than the nurseries' groups.
    traceback_of = first if len(leaves) == 1 else exc
    log.error("crashed: %s: %s", type(first).__name__, first, exc_info=traceback_of)
    return EXIT_FAILURE


def run_actor(name: str, run: ActorMain, config: Config, *, grace_s: float) -> int:
    """Run one actor until it stops and return the process exit code.

    Args:
        name: the actor name, used for logging as ``weall.actors.<name>``.
        run: the actor's ``run(config, *, task_status)`` coroutine function.
        config: the validated settings, passed to ``run``.
        grace_s: seconds between the first stop signal and the cancellation
            of ``run``. Keep it below the supervisor's shutdown grace for this
            actor, or the supervisor sends SIGKILL first.

    Returns:
        ``EXIT_OK``, ``EXIT_FAILURE`` or ``EXIT_CONFIG``, or the code of a
        ``SystemExit`` raised inside ``run``.
    """
    global _current_stop
    if not math.isfinite(grace_s) or grace_s < 0:
        raise ValueError(f"grace_s must be a finite number >= 0 (got {grace_s!r})")
    logs.setup(name, config.log_level, config.log_format)
    # Lifecycle lines go to the actor's own logger, so they read as its output.
    log = logging.getLogger(f"weall.actors.{name}")
    log.info(
        "started version=%s python=%s mode=%s",
        __version__,
        sys.version.split()[0],
        config.mode,
    )
    runtime = _Runtime(config, grace_s, log)
    code = EXIT_OK
    try:
        trio.run(runtime.main, run)
    except BaseException as exc:
        code = _exit_code_for(exc, log)
    finally:
        _current_stop = None
    log.info(
        "stopped code=%d uptime_s=%.3f", code, time.monotonic() - runtime.started_at
    )
    return code
