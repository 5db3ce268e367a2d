"""The supervisor: start actors in order, keep them running, stop them in reverse.

Modelled on an Erlang/OTP supervisor with the one-for-one strategy: a dead
actor is restarted alone and the others keep running. Two things differ from
OTP. Restarts wait a capped exponential backoff with jitter, and the restart
budget (``RestartPolicy.max_restarts`` within ``window_s``) is counted per
actor, so the actor that exhausted it is the one named when the supervisor
gives up. Giving up stops every actor in reverse start order and makes
``Supervisor.run`` raise ``GaveUpError``. An actor that exits with code 78
(invalid settings or a rejected start) is not restarted at all: the node
stops the same way and ``Supervisor.run`` raises ``ActorConfigError``.

A stop (SIGTERM, SIGINT, ``weall stop`` or giving up) sends each actor
SIGTERM in reverse start order and waits for its shutdown grace before it
sends SIGKILL. The whole stop ends within ``RestartPolicy.stop_timeout_s``.
Another SIGTERM or SIGINT during the stop kills the remaining actors at once.
The exception is a signal within ``DUPLICATE_SIGNAL_S`` of the first that is
not a second SIGINT: a platform that repeats its SIGTERM, or a process
manager that sends SIGTERM for the Ctrl-C that also reached the supervisor
as SIGINT, delivers one request twice. A terminal delivers each Ctrl-C once,
so a second SIGINT always hurries the stop.

The ``actors.json`` status file is written by a task of its own, in a worker
thread, so that a slow disk or a held file lock never stalls supervision.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final, TextIO

import trio

from weall import __version__
from weall.errors import StartupError, WeallError
from weall.supervisor import control
from weall.supervisor._child import ActorRunner, ActorStatus, ExitStatus
from weall.supervisor._output import OutputSink
from weall.supervisor._signals import receive_stop_signals
from weall.supervisor._status_file import write_status_file
from weall.supervisor.spec import ActorSpec, RestartPolicy
from weall.supervisor.state import ActorState

if TYPE_CHECKING:
    from weall.config import Config

__all__ = ["ActorConfigError", "GaveUpError", "Supervisor", "SupervisorStatistics"]

log = logging.getLogger(__name__)

# Signals this soon after the first one are duplicates, not a request to
# hurry, unless both are SIGINT. Heroku's dyno manager documents that a
# process being shut down may receive several SIGTERMs (Dev Center, "Dyno
# Shutdown Behavior").
# NOTE: how far apart Heroku's repeated signals can be is not documented.
DUPLICATE_SIGNAL_S: Final = 1.0

# Seconds between attempts to write the status file after a failed one.
STATUS_RETRY_S: Final = 1.0

_STARTING: Final = "starting"
_RUNNING: Final = "running"
_STOPPING: Final = "stopping"


class GaveUpError(WeallError):
    """An actor exhausted its restart budget, so the supervisor stopped the node."""

    def __init__(
        self, actor: str, restarts: int, window_s: float, last_exit: ExitStatus
    ) -> None:
        self.actor = actor
        self.restarts = restarts
        self.window_s = window_s
        self.last_exit = last_exit
        super().__init__(
            f"gave up on actor {actor} after {restarts} restarts within {window_s:g} s, "
            f"last exit: {last_exit.describe()}"
        )


class ActorConfigError(WeallError):
    """An actor exited with code 78, so the supervisor stopped the node."""

    def __init__(self, actor: str, last_exit: ExitStatus, reason: str | None) -> None:
        self.actor = actor
        self.last_exit = last_exit
        self.reason = reason
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"actor {actor} failed with {last_exit.describe()} (invalid settings or a "
            f"rejected start) and was not restarted{detail}"
        )


@dataclass(frozen=True)
class SupervisorStatistics:
    """A snapshot of the supervisor and its actors, in start order."""

    state: str
    pid: int
    uptime_s: float
    actors: tuple[ActorStatus, ...]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Supervisor:
    """Supervise one process per ``ActorSpec``.

    Args:
        specs: the actors in start order; names must be unique.
        config: the node settings. The supervisor uses ``log_format``,
            ``heartbeat_timeout_s``, ``control_socket`` and ``run_dir``.
        policy: restart budget, backoff and stop limits. By default the budget
            comes from ``config.restart_max`` and ``config.restart_window_s``.
        output: where actor output lines go; ``sys.stdout`` by default.
        on_start: called once the control lock is held, before the first
            actor starts; an ``OSError`` from it stops the start.
    """

    def __init__(
        self,
        specs: Sequence[ActorSpec],
        config: Config,
        *,
        policy: RestartPolicy | None = None,
        output: TextIO | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        names = [spec.name for spec in specs]
        if not names:
            raise ValueError("a supervisor needs at least one actor spec")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"actor names must be unique (repeated: {', '.join(duplicates)})"
            )
        self.config = config
        self._on_start = on_start
        self.policy = policy or RestartPolicy(
            max_restarts=config.restart_max, window_s=config.restart_window_s
        )
        sink = OutputSink(config.log_format, output)
        self._runners = [
            ActorRunner(
                spec,
                config,
                self.policy,
                sink,
                on_change=self._status_changed,
                on_give_up=self._give_up,
                on_config_exit=self._config_exit,
            )
            for spec in specs
        ]
        self._by_name = {runner.name: runner for runner in self._runners}
        self._phase = _STARTING
        self._stop_requested = trio.Event()
        self._stop_deadline = float("inf")
        self._start_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._failure: GaveUpError | ActorConfigError | None = None
        self._started_at = time.monotonic()
        self._status_file_failing = False
        self._status_dirty = trio.Event()
        self._first_signal_at: float | None = None
        self._sigint_received = False

    @property
    def actor_names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    @property
    def stopping(self) -> bool:
        return self._phase == _STOPPING

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start every actor, supervise them until a stop, then stop them all.

        ``task_status.started()`` is called once every actor was started (or
        a stop interrupted the start).

        Raises:
            StartupError: another supervisor has locked the control socket,
                or ``on_start`` raised an ``OSError``.
            GaveUpError: an actor exhausted its restart budget; the other
                actors were stopped before it is raised.
            ActorConfigError: an actor exited with code 78; the other actors
                were stopped before it is raised.
        """
        socket_path = self.config.control_socket
        with control.hold_control_lock(socket_path):
            if self._on_start is not None:
                try:
                    self._on_start()
                except OSError as exc:
                    raise StartupError(f"preparing the node failed: {exc}") from exc
            try:
                await self._run_locked(task_status)
            finally:
                with trio.CancelScope(shield=True):
                    await self._write_status_file()
        if self._failure is not None:
            raise self._failure

    async def _run_locked(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(receive_stop_signals, self._on_signal)
            await nursery.start(control.serve_control, self, self.config.control_socket)
            nursery.start_soon(self._write_status_file_loop)
            log.info(
                "supervisor started version=%s pid=%d actors=%s control=%s",
                __version__,
                os.getpid(),
                ",".join(self.actor_names),
                self.config.control_socket,
            )
            with self._start_scope:
                await self._start_all(nursery)
            task_status.started()
            await self._stop_requested.wait()
            await self._stop_all()
            nursery.cancel_scope.cancel()

    async def _start_all(self, nursery: trio.Nursery) -> None:
        for runner in self._runners:
            runner.start(nursery)
            await runner.wait_settled()
        if not self.stopping:
            self._phase = _RUNNING
            log.info(
                "all actors started start_s=%.3f", time.monotonic() - self._started_at
            )

    def request_stop(self, reason: str) -> None:
        """Begin the ordered stop of every actor; later calls do nothing."""
        if self.stopping:
            return
        self._phase = _STOPPING
        self._stop_deadline = trio.current_time() + self.policy.stop_timeout_s
        log.info(
            "stopping node reason=%s timeout_s=%s", reason, self.policy.stop_timeout_s
        )
        for runner in self._runners:
            runner.prevent_restarts(self._stop_deadline)
        self._start_scope.cancel()
        self._stop_requested.set()

    def hurry(self, reason: str) -> None:
        """Kill every actor that is still running at once."""
        self.request_stop(reason)
        log.warning("hurrying stop reason=%s", reason)
        for runner in self._runners:
            runner.kill_now(reason)

    def _on_signal(self, name: str) -> None:
        now = trio.current_time()
        second_sigint = name == "SIGINT" and self._sigint_received
        if name == "SIGINT":
            self._sigint_received = True
        if self._first_signal_at is None:
            self._first_signal_at = now
            self.request_stop(f"signal {name}")
        elif not second_sigint and now - self._first_signal_at < DUPLICATE_SIGNAL_S:
            log.info("ignoring repeated signal=%s while stopping", name)
        else:
            self.hurry(f"second signal {name}")

    async def _stop_all(self) -> None:
        begun = trio.current_time()
        for runner in reversed(self._runners):
            await runner.stop(self._stop_deadline)
        log.info("stopped node stop_s=%.3f", trio.current_time() - begun)

    def _give_up(self, runner: ActorRunner, last_exit: ExitStatus) -> None:
        restarts = self.policy.max_restarts
        error = GaveUpError(runner.name, restarts, self.policy.window_s, last_exit)
        if self._failure is None:
            self._failure = error
        log.error(
            "gave up actor=%s restarts=%d window_s=%s last_exit=%r",
            runner.name,
            restarts,
            self.policy.window_s,
            last_exit.describe(),
        )
        self.request_stop(f"gave up on {runner.name}")

    def _config_exit(self, runner: ActorRunner, last_exit: ExitStatus) -> None:
        reason = runner.failure_message
        if self._failure is None:
            self._failure = ActorConfigError(runner.name, last_exit, reason)
        log.error(
            "actor failed with invalid settings or a rejected start actor=%s "
            "last_exit=%r reason=%r",
            runner.name,
            last_exit.describe(),
            reason,
        )
        self.request_stop(f"{runner.name} exited with code {last_exit.code}")

    async def restart_actor(self, name: str) -> ActorStatus:
        """Restart one actor outside its restart budget and return its new status.

        Raises:
            KeyError: no actor has that name.
            RuntimeError: the node is stopping, or the actor was not started
                yet or was given up on.
        """
        runner = self._by_name[name]
        if self.stopping:
            raise RuntimeError("the node is stopping")
        if runner.state is ActorState.FATAL:
            raise RuntimeError(f"actor {name} was given up on")
        if runner.state is ActorState.STOPPED and not runner.loop_running:
            raise RuntimeError(f"actor {name} has not been started yet")
        assert self._nursery is not None
        log.info("restart requested actor=%s pid=%s", name, runner.pid)
        await runner.restart(self._nursery)
        return runner.snapshot()

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            state=self._phase,
            pid=os.getpid(),
            uptime_s=round(time.monotonic() - self._started_at, 3),
            actors=tuple(runner.snapshot() for runner in self._runners),
        )

    def _status_changed(self) -> None:
        self._status_dirty.set()

    async def _write_status_file_loop(self) -> None:
        """Write the status file after each change; changes during a write are merged."""
        while True:
            await self._status_dirty.wait()
            self._status_dirty = trio.Event()
            if not await self._write_status_file():
                await trio.sleep(STATUS_RETRY_S)
                self._status_dirty.set()

    async def _write_status_file(self) -> bool:
        """Write the current state of every actor; return False if the write failed."""
        entries = {}
        for runner in self._runners:
            status = runner.snapshot()
            entries[runner.name] = {
                "state": status.state,
                "pid": status.pid,
                "restarts": status.restarts,
                "started_at_ms": status.started_at_ms,
                "last_exit": status.last_exit,
                "supervisor_pid": os.getpid(),
            }
        try:
            await trio.to_thread.run_sync(
                write_status_file, self.config.run_dir, entries, tuple(self._by_name)
            )
        except OSError as exc:
            if not self._status_file_failing:
                log.error(
                    "status file write failed run_dir=%s error=%s",
                    self.config.run_dir,
                    exc,
                )
            self._status_file_failing = True
            return False
        if self._status_file_failing:
            log.info("status file write recovered run_dir=%s", self.config.run_dir)
            self._status_file_failing = False
        return True
