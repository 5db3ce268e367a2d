"""One supervised actor: spawn, ready handshake, heartbeats, exit and restart.

Liveness bound: once an actor is RUNNING, the supervisor sends it SIGKILL when
no status event (heartbeat, ready or stopping) has arrived for
``config.heartbeat_timeout_s`` seconds. A hung or SIGSTOPped actor is killed
within that time of its last heartbeat plus a few milliseconds of scheduling,
and its replacement is spawned after the backoff delay. Before it reports
ready, ``ActorSpec.start_timeout_s`` applies instead. During a stop, the
shutdown grace applies instead.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson
import trio

from weall.actors._base import EXIT_CONFIG, STATUS_FD_ENV
from weall.supervisor._output import OutputSink, pump_lines
from weall.supervisor._restart import RestartBudget, backoff_delay
from weall.supervisor.spec import ActorSpec, RestartPolicy
from weall.supervisor.state import ActorState, check_transition

if TYPE_CHECKING:
    from weall.config import Config

__all__ = ["ActorRunner", "ActorStatus", "ExitStatus"]

log = logging.getLogger(__name__)

# After the actor exits, its output pipes get this long to drain; a leftover
# process that keeps them open cannot hold up the restart.
_DRAIN_S: Final = 1.0
# Malformed status lines logged per process; the rest are only counted.
_MAX_BAD_STATUS_LOGS: Final = 3
# Characters kept of the message of a "failed" status event.
_MAX_FAILURE_MESSAGE: Final = 1000


@dataclass(frozen=True)
class ExitStatus:
    """The end of one actor process: exit code or signal, and the reason.

    Attributes:
        code: the exit code, or None when a signal ended it or it never ran.
        signal: the name of the signal that ended it, such as ``SIGKILL``.
        reason: why the supervisor ended it (``stop``, ``restart``,
            ``start timeout``, ``heartbeat timeout``, ``grace expired``,
            ``second signal``), or why it could not be spawned. None when it
            exited on its own.
        at_ms: the wall-clock time of the exit, in Unix milliseconds.
    """

    code: int | None
    signal: str | None
    reason: str | None
    at_ms: int

    @classmethod
    def from_returncode(cls, returncode: int, reason: str | None) -> ExitStatus:
        now_ms = int(time.time() * 1000)
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            return cls(code=None, signal=name, reason=reason, at_ms=now_ms)
        return cls(code=returncode, signal=None, reason=reason, at_ms=now_ms)

    @property
    def returncode(self) -> int | None:
        """The ``subprocess`` convention: negative for a signal, None if never spawned."""
        if self.signal is not None:
            try:
                return -signal.Signals[self.signal].value
            except KeyError:
                return -1
        return self.code

    def describe(self) -> str:
        if self.signal is not None:
            text = f"killed by {self.signal}"
        elif self.code is not None:
            text = f"exit code {self.code}"
        else:
            text = "not started"
        return f"{text} ({self.reason})" if self.reason else text

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "signal": self.signal,
            "reason": self.reason,
            "at_ms": self.at_ms,
        }


@dataclass(frozen=True)
class ActorStatus:
    """A snapshot of one actor, as ``weall status`` reports it."""

    name: str
    state: str
    pid: int | None
    uptime_s: float | None
    restarts: int
    started_at_ms: int | None
    last_exit: dict[str, Any] | None


class ActorRunner:
    """Run one actor spec for as long as the supervisor wants it running.

    ``run_loop`` spawns the process and starts it again after each exit, as
    the restart type and the restart budget allow. An exit with code 78
    (``EX_CONFIG``: invalid settings or a rejected start) is never followed by
    a restart, because the next start would fail the same way. It calls
    ``on_config_exit`` instead. ``stop`` and ``restart`` come from the
    supervisor, which owns the nursery that runs the loop.
    """

    def __init__(
        self,
        spec: ActorSpec,
        config: Config,
        policy: RestartPolicy,
        sink: OutputSink,
        *,
        on_change: Callable[[], None],
        on_give_up: Callable[[ActorRunner, ExitStatus], None],
        on_config_exit: Callable[[ActorRunner, ExitStatus], None],
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self._config = config
        self._policy = policy
        self._sink = sink
        self._on_change = on_change
        self._on_give_up = on_give_up
        self._on_config_exit = on_config_exit
        self.state = ActorState.STOPPED
        self.process: trio.Process | None = None
        self.restarts = 0
        self.last_exit: ExitStatus | None = None
        # The message of the last "failed" status event of the current process.
        self.failure_message: str | None = None
        self._budget = RestartBudget(policy)
        self._failures = 0
        self._spawned_at = 0.0
        self._spawned_at_ms: int | None = None
        self._ready_at: float | None = None
        self._spawn_count = 0
        self._ready_count = 0
        self._loop_running = False
        self._stop_requested = False
        self._restart_requested = False
        self._stop_deadline = math.inf
        self._exited = False
        self._kill_reason: str | None = None
        self._reported_stopping = False
        self._last_beat = 0.0
        self._bad_status_lines = 0
        self._ready = trio.Event()
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._grace_scope: trio.CancelScope | None = None

    # ---- public interface used by the supervisor -------------------------

    @property
    def pid(self) -> int | None:
        process = self.process
        if process is None or process.returncode is not None:
            return None
        return process.pid

    @property
    def loop_running(self) -> bool:
        return self._loop_running

    def start(self, nursery: trio.Nursery) -> None:
        """Start the supervision loop in ``nursery``; the loop must not be running."""
        if self._loop_running:
            raise RuntimeError(f"actor {self.name}: already supervised")
        self._loop_running = True
        nursery.start_soon(self.run_loop)

    async def wait_settled(self) -> None:
        """Wait until the actor reported ready once, or its loop ended."""
        await self._wait_until(lambda: self._ready_count > 0 or not self._loop_running)

    def prevent_restarts(self, deadline: float) -> None:
        """Let no exit from now on lead to a restart; stop by ``deadline`` at the latest."""
        self._stop_requested = True
        self._stop_deadline = min(self._stop_deadline, deadline)
        self._wake.set()

    async def stop(self, deadline: float) -> None:
        """Stop the actor for good: SIGTERM, then SIGKILL at its grace or ``deadline``."""
        self.prevent_restarts(deadline)
        await self._terminate(self._stop_deadline)
        await self._wait_until(lambda: not self._loop_running)

    def kill_now(self, reason: str) -> None:
        """Mark the actor stopped and send SIGKILL at once if it runs."""
        self.prevent_restarts(-math.inf)
        if self._grace_scope is not None:
            self._grace_scope.cancel()
        if self.pid is not None:
            log.warning(
                "killing at once actor=%s pid=%d reason=%s", self.name, self.pid, reason
            )
            self._kill(reason)

    async def restart(self, nursery: trio.Nursery) -> None:
        """Stop the actor if it runs and start it again, outside the restart budget.

        Returns once the new process reported ready, or failed to start.
        """
        spawned = self._spawn_count
        if not self._loop_running:
            self.restarts += 1
            self.start(nursery)
        else:
            self._restart_requested = True
            if self.state is ActorState.BACKOFF:
                self._wake.set()
            else:
                await self._terminate(math.inf)
        await self._wait_until(
            lambda: (
                not self._loop_running
                or (
                    self._spawn_count > spawned
                    and self.state is not ActorState.STARTING
                )
            )
        )

    def snapshot(self) -> ActorStatus:
        alive = self.pid is not None
        return ActorStatus(
            name=self.name,
            state=self.state.value,
            pid=self.pid,
            uptime_s=round(trio.current_time() - self._spawned_at, 3)
            if alive
            else None,
            restarts=self.restarts,
            started_at_ms=self._spawned_at_ms if alive else None,
            last_exit=self.last_exit.as_json() if self.last_exit else None,
        )

    # ---- the supervision loop ---------------------------------------------

    async def run_loop(self) -> None:
        self._loop_running = True
        try:
            while True:
                status = await self._run_once()
                if not await self._should_start_again(status):
                    return
        finally:
            self._loop_running = False
            self._notify()

    async def _should_start_again(self, status: ExitStatus) -> bool:
        """Decide what follows an exit, waiting out the backoff delay if any."""
        if self._stop_requested:
            # STOPPING -> STOPPED, or RUNNING -> STOPPED when it exited on its own
            self._set_state(ActorState.STOPPED)
            return False
        if self._restart_requested:
            self._restart_requested = False
            self._set_state(ActorState.STOPPED)  # STOPPING -> STOPPED
            self.restarts += 1
            return True
        if status.code == EXIT_CONFIG:
            self._set_state(ActorState.FATAL)  # RUNNING/STARTING -> FATAL
            self._on_config_exit(self, status)
            return False
        if not self.spec.restart.restarts_after(status.returncode):
            self._set_state(ActorState.EXITED)  # RUNNING/STARTING -> EXITED
            return False
        if not self._budget.try_record(trio.current_time()):
            self._set_state(ActorState.FATAL)  # RUNNING/STARTING -> FATAL
            self._on_give_up(self, status)
            return False
        return await self._back_off()

    async def _back_off(self) -> bool:
        """Wait out the backoff delay; return False if a stop came meanwhile."""
        self._failures += 1
        delay = backoff_delay(self._failures, self._policy)
        self._set_state(ActorState.BACKOFF)  # RUNNING/STARTING -> BACKOFF
        log.info(
            "restarting actor=%s retry_in=%.3f failures=%d",
            self.name,
            delay,
            self._failures,
        )
        with trio.move_on_after(delay):
            await self._wake.wait()
        self._wake = trio.Event()
        if self._stop_requested:
            self._set_state(ActorState.STOPPED)  # BACKOFF -> STOPPED
            return False
        self._restart_requested = False
        self.restarts += 1
        return True

    async def _run_once(self) -> ExitStatus:
        """Spawn the actor once and supervise it until it exits."""
        self._begin_attempt()
        self._set_state(ActorState.STARTING)  # STOPPED/BACKOFF/EXITED -> STARTING
        try:
            process, status_read = await self._spawn()
        except OSError as exc:
            log.error(
                "spawn failed actor=%s argv0=%s error=%s",
                self.name,
                self.spec.argv[0],
                exc,
            )
            return self._record_exit(
                None,
                ExitStatus(None, None, f"spawn failed: {exc}", int(time.time() * 1000)),
            )
        self.process = process
        log.info("spawned actor=%s pid=%d", self.name, process.pid)
        self._notify()
        try:
            returncode = await self._supervise_process(process, status_read)
        finally:
            await self._reap(process)
        reason = self._kill_reason or self._request_reason()
        return self._record_exit(
            process, ExitStatus.from_returncode(returncode, reason)
        )

    def _begin_attempt(self) -> None:
        self._spawn_count += 1
        self._ready = trio.Event()
        self._ready_at = None
        self._kill_reason = None
        self.failure_message = None
        self._exited = False
        self._reported_stopping = False
        self._bad_status_lines = 0
        self._spawned_at = trio.current_time()
        self._spawned_at_ms = int(time.time() * 1000)
        self._last_beat = self._spawned_at

    async def _spawn(self) -> tuple[trio.Process, int]:
        """Spawn the actor with the write end of a new status pipe.

        Returns the process and the read end of the pipe, which the caller
        owns. The supervisor's copy of the write end is closed, so the read end
        reaches end of file when the actor exits.
        """
        status_read, status_write = os.pipe()
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            **self.spec.env,
            STATUS_FD_ENV: str(status_write),
        }
        try:
            process = await trio.lowlevel.open_process(
                list(self.spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=(status_write,),
                env=env,
            )
        except BaseException:
            os.close(status_read)
            raise
        finally:
            os.close(status_write)
        return process, status_read

    async def _supervise_process(self, process: trio.Process, status_read: int) -> int:
        """Copy output, read status events and watch liveness until the process exits."""
        assert process.stdout is not None
        assert process.stderr is not None
        status_stream = trio.lowlevel.FdStream(status_read)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, process.stdout, "stdout", process.pid)
            nursery.start_soon(self._pump, process.stderr, "stderr", process.pid)
            nursery.start_soon(self._read_status, status_stream)
            watch_scope = trio.CancelScope()
            nursery.start_soon(self._watch, watch_scope)
            # A stop or restart that came while the process was being spawned
            # found no process to signal, so it is carried out now.
            if self._stop_requested:
                nursery.start_soon(self._terminate, self._stop_deadline)
            elif self._restart_requested:
                nursery.start_soon(self._terminate, math.inf)
            returncode = await process.wait()
            self._exited = True
            watch_scope.cancel()
            self._kill_leftovers(process.pid)
            nursery.cancel_scope.deadline = trio.current_time() + _DRAIN_S
        return returncode

    async def _reap(self, process: trio.Process) -> None:
        """Make sure the process is dead and reaped, even when this task is cancelled."""
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()

    # ---- events from the actor -------------------------------------------

    async def _pump(
        self, stream: trio.abc.ReceiveStream, source: str, pid: int
    ) -> None:
        await pump_lines(
            stream, lambda lines: self._sink.write_lines(self.name, pid, source, lines)
        )

    async def _read_status(self, stream: trio.lowlevel.FdStream) -> None:
        async with stream:
            await pump_lines(stream, self._on_status_lines)

    def _on_status_lines(self, lines: list[str]) -> None:
        for line in lines:
            try:
                message = orjson.loads(line)
                event = message["event"]
            except (orjson.JSONDecodeError, TypeError, KeyError):
                self._bad_status_lines += 1
                if self._bad_status_lines <= _MAX_BAD_STATUS_LOGS:
                    log.warning(
                        "invalid status line actor=%s line=%.200r", self.name, line
                    )
                continue
            if event == "failed":
                # Kept even after the exit: it explains the exit code.
                self.failure_message = str(message.get("message"))[
                    :_MAX_FAILURE_MESSAGE
                ]
                continue
            if self._exited:
                # Other events still in the pipe after the exit describe a
                # dead process.
                continue
            self._last_beat = trio.current_time()
            if event == "ready":
                self._on_ready()
            elif event == "stopping":
                self._reported_stopping = True
            elif event != "heartbeat":
                log.debug("unknown status event actor=%s event=%r", self.name, event)

    def _on_ready(self) -> None:
        if self._ready.is_set():
            return
        self._ready.set()
        self._ready_at = trio.current_time()
        self._ready_count += 1
        if self.state is ActorState.STARTING:
            self._set_state(ActorState.RUNNING)  # STARTING -> RUNNING
            log.info(
                "running actor=%s pid=%s start_s=%.3f",
                self.name,
                self.pid,
                self._ready_at - self._spawned_at,
            )
        else:
            self._notify()

    async def _watch(self, scope: trio.CancelScope) -> None:
        """Kill the actor when it misses its start timeout or its heartbeats."""
        with scope:
            with trio.move_on_after(self.spec.start_timeout_s):
                await self._ready.wait()
            if not self._ready.is_set():
                if self.state is ActorState.STARTING:
                    log.warning(
                        "start timed out actor=%s pid=%s timeout_s=%s",
                        self.name,
                        self.pid,
                        self.spec.start_timeout_s,
                    )
                    self._kill("start timeout")
                return
            timeout = self._config.heartbeat_timeout_s
            while True:
                # Each heartbeat moves the deadline; sleep until the latest one.
                deadline = self._last_beat + timeout
                if trio.current_time() >= deadline:
                    break
                await trio.sleep_until(deadline)
            if self.state is ActorState.RUNNING:
                log.warning(
                    "heartbeat timed out actor=%s pid=%s silent_s=%.3f timeout_s=%s",
                    self.name,
                    self.pid,
                    trio.current_time() - self._last_beat,
                    timeout,
                )
                self._kill("heartbeat timeout")

    # ---- stopping and exits ----------------------------------------------

    async def _terminate(self, deadline: float) -> None:
        """Send SIGTERM, wait for the grace (or ``deadline``), then SIGKILL."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        if self.state in (ActorState.STARTING, ActorState.RUNNING):
            self._set_state(ActorState.STOPPING)  # RUNNING -> STOPPING
        grace = self.spec.shutdown_grace_s
        log.info("stopping actor=%s pid=%d grace_s=%s", self.name, process.pid, grace)
        # NOTE: on Heroku every process of the dyno gets SIGTERM at once. An
        # actor that already reported stopping is not sent a second SIGTERM,
        # which it would take as the signal to cancel at once.
        if not self._reported_stopping:
            process.send_signal(signal.SIGTERM)
        with trio.move_on_at(min(trio.current_time() + grace, deadline)) as scope:
            self._grace_scope = scope
            await process.wait()
        self._grace_scope = None
        if process.returncode is None:
            if self._kill_reason is None:
                log.warning(
                    "grace expired, sending SIGKILL actor=%s pid=%d grace_s=%s",
                    self.name,
                    process.pid,
                    grace,
                )
                self._kill("grace expired")
            await process.wait()

    def _kill(self, reason: str) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        if self._kill_reason is None:
            self._kill_reason = reason
        process.kill()

    def _kill_leftovers(self, pgid: int) -> None:
        """Kill what is left of the actor's process group once the actor is gone."""
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        log.warning("killed leftover processes actor=%s pgid=%d", self.name, pgid)

    def _request_reason(self) -> str | None:
        if self._stop_requested:
            return "stop"
        if self._restart_requested:
            return "restart"
        return None

    def _record_exit(
        self, process: trio.Process | None, status: ExitStatus
    ) -> ExitStatus:
        """Store and log an exit and reset the backoff after a long enough run."""
        self.last_exit = status
        ready_at = self._ready_at
        if (
            ready_at is not None
            and trio.current_time() - ready_at >= self._policy.backoff_reset_s
        ):
            self._failures = 0
        uptime = trio.current_time() - self._spawned_at
        pid = process.pid if process is not None else None
        if pid is not None and self.spec.on_exit is not None:
            self.spec.on_exit(pid)
        fields = (self.name, pid, status.code, status.signal, uptime)
        if self._stop_requested or self._restart_requested:
            log.info("stopped actor=%s pid=%s code=%s signal=%s uptime_s=%.3f", *fields)
        elif (
            not self.spec.restart.restarts_after(status.returncode) and status.code == 0
        ):
            log.info("exited actor=%s pid=%s code=%s signal=%s uptime_s=%.3f", *fields)
        else:
            log.warning(
                "exited unexpectedly actor=%s pid=%s code=%s signal=%s uptime_s=%.3f reason=%s",
                *fields,
                status.reason,
            )
        return status

    # ---- state -------------------------------------------------------------

    def _set_state(self, new: ActorState) -> None:
        if new is self.state:
            return
        check_transition(self.name, self.state, new)
        self.state = new
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
        self._on_change()

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()
