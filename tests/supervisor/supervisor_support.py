"""Helpers shared by the supervisor tests: process environment and the Node wrapper."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from weall.supervisor._status_file import read_status_file

HERE = Path(__file__).parent
HARNESS = HERE / "harness.py"
FAKE_ACTOR = HERE / "fake_actor.py"
SPAWNED = re.compile(r"spawned actor=(\w+) pid=(\d+)")

# Short timings so that failures show within a second; see each test for
# the bound it checks.
FAST_ENV = {
    "WEALL_HEARTBEAT_INTERVAL_S": "0.1",
    "WEALL_HEARTBEAT_TIMEOUT_S": "1.0",
    "WEALL_LOG_LEVEL": "INFO",
}


def node_env(run_dir: Path, **extra: str) -> dict[str, str]:
    """Return the environment of a supervisor or CLI process in ``run_dir``."""
    return {
        **os.environ,
        **FAST_ENV,
        "WEALL_RUN_DIR": str(run_dir),
        "WEALL_DB_PATH": str(run_dir / "weall.db"),
        "FAKE_STATE_DIR": str(run_dir),
        **extra,
    }


class Node:
    """A running ``harness.py`` process with its output collected line by line."""

    def __init__(self, process: trio.Process, env: dict[str, str]) -> None:
        self.process = process
        self.env = env
        self.lines: list[str] = []
        self.stderr = ""
        self._changed = trio.Event()

    @property
    def pid(self) -> int:
        return self.process.pid

    async def collect_stdout(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        with contextlib.suppress(trio.ClosedResourceError):
            async for chunk in self.process.stdout:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                self.lines.extend(line.decode() for line in complete)
                self._changed.set()
                self._changed = trio.Event()

    async def collect_stderr(self) -> None:
        assert self.process.stderr is not None
        with contextlib.suppress(trio.ClosedResourceError):
            async for chunk in self.process.stderr:
                self.stderr += chunk.decode()

    async def wait_for(
        self, pattern: str, *, start: int = 0, timeout_s: float = 10.0
    ) -> int:
        """Return the index of the first line from ``start`` on that matches ``pattern``."""
        regex = re.compile(pattern)
        with trio.move_on_after(timeout_s):
            while True:
                for index in range(start, len(self.lines)):
                    if regex.search(self.lines[index]):
                        return index
                await self._changed.wait()
        output = "\n".join(self.lines[-40:])
        raise AssertionError(
            f"no line matched {pattern!r} within {timeout_s} s; output:\n{output}"
        )

    def index_of(self, pattern: str, start: int = 0) -> int:
        regex = re.compile(pattern)
        for index in range(start, len(self.lines)):
            if regex.search(self.lines[index]):
                return index
        raise AssertionError(f"no line matched {pattern!r}")

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.lines if regex.search(line))

    def pids(self) -> dict[str, int]:
        """Return the latest spawned pid of each actor."""
        latest: dict[str, int] = {}
        for line in self.lines:
            match = SPAWNED.search(line)
            if match:
                latest[match.group(1)] = int(match.group(2))
        return latest

    def all_pids(self) -> list[int]:
        return [
            int(match.group(2))
            for line in self.lines
            if (match := SPAWNED.search(line))
        ]

    def send_signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def wait_exit(self, timeout_s: float = 35.0) -> int:
        with trio.fail_after(timeout_s):
            code = await self.process.wait()
        # Give the readers a moment to take the last lines.
        await trio.sleep(0.05)
        return code

    def kill_everything(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        for pid in self.all_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def process_gone(pid: int) -> bool:
    """Return whether ``pid`` has exited. An unreaped zombie counts as exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def wait_status_file(
    run_dir: Path,
    predicate: Callable[[dict[str, Any]], bool],
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Return the status file's entries once ``predicate`` is true for them.

    The supervisor writes the file in a worker thread after each change, so
    it may lag a log line by a few milliseconds.
    """
    with trio.move_on_after(timeout_s):
        while True:
            entries = read_status_file(run_dir)
            if predicate(entries):
                return entries
            await trio.sleep(0.02)
    raise AssertionError(
        f"status file did not reach the expected state within {timeout_s} s: "
        f"{read_status_file(run_dir)}"
    )


def all_running(*names: str) -> Callable[[dict[str, Any]], bool]:
    """Return a predicate that is true when every actor in ``names`` is running."""
    return lambda entries: all(
        entries.get(name, {}).get("state") == "running" for name in names
    )
