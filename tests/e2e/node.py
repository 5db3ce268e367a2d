"""A real ``weall supervise`` in a temporary directory, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Node", "free_port", "running_node"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Node:
    """One supervisor process and its data directory.

    Several ``Node`` objects may share one working directory and run
    directory, as the two supervisors of the Compose file share ./data. Each
    then needs its own ``log_name`` and control socket.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        command: list[str] | None = None,
        run_dir: Path | None = None,
        port: int | None = None,
        log_name: str = "supervisor.log",
    ) -> None:
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.args = args or []
        # A command line run as is, with this venv's bin directory first on
        # PATH, instead of ``python -m weall supervise ARGS``.
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / log_name
        # Unix socket paths must stay short, so the run directory lives in /tmp.
        self.run_dir = run_dir or Path(
            tempfile.mkdtemp(prefix="weall-run-", dir="/tmp")
        )

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("WEALL_") and k != "PORT"
        }
        env.update(
            {
                "WEALL_API_PORT": str(self.port),
                "WEALL_RUN_DIR": str(self.run_dir),
                "WEALL_HEARTBEAT_INTERVAL_S": "0.2",
                "WEALL_HEARTBEAT_TIMEOUT_S": "5",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.command is not None:
            env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env.update(self.extra_env)
        return env

    def start(self, *, stderr_path: Path | None = None) -> None:
        """Start the supervisor; its stderr goes to ``stderr_path`` or to the log."""
        argv = self.command or [sys.executable, "-m", "weall", "supervise", *self.args]
        log = self.log_path.open("ab")
        stderr = stderr_path.open("ab") if stderr_path is not None else None
        self.process = subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=stderr if stderr is not None else subprocess.STDOUT,
        )
        log.close()
        if stderr is not None:
            stderr.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"supervisor exited {self.process.returncode}:\n{self.log()}"
                )
            try:
                if httpx.get(f"{self.url}/v1/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"node not ready within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )

    def stop(self, timeout: float = 40.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_tree()
            raise

    def actor_status(self) -> dict[str, dict[str, Any]]:
        """Return the entries of the status file, one per actor."""
        document: dict[str, dict[str, Any]] = json.loads(
            (self.run_dir / "actors.json").read_text()
        )
        return document

    def actor_pids(self) -> dict[str, int]:
        return {
            name: info["pid"]
            for name, info in self.actor_status().items()
            if info.get("pid")
        }

    def wait_all_running(
        self, names: tuple[str, ...], timeout: float = 60.0
    ) -> dict[str, int]:
        """Wait until every actor in ``names`` is running; return their pids."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = self.actor_status()
            except (OSError, ValueError):
                status = {}
            if all(status.get(name, {}).get("state") == "running" for name in names):
                return {name: int(status[name]["pid"]) for name in names}
            time.sleep(0.02)
        raise AssertionError(
            f"actors {names} not all running within {timeout} s:\n{self.log()[-3000:]}"
        )

    def kill_tree(self) -> None:
        """SIGKILL the supervisor and every actor, as a power cut would."""
        assert self.process is not None
        try:
            pids = list(self.actor_pids().values())
        except (OSError, ValueError):
            pids = []
        for pid in [self.process.pid, *pids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)

    def cli(
        self, *args: str, check: bool = False, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "weall", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"weall {' '.join(args)} exited {result.returncode}: "
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def tx(
        self,
        kind: str,
        *args: str,
        key: str = "data/keys/founder.key",
        wait: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        extra = ["--wait"] if wait else []
        return self.cli("tx", kind, *args, "--key", key, "--url", self.url, *extra)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=10.0)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=10.0, **kwargs)


@contextmanager
def running_node(workdir: Path, **kwargs: Any) -> Iterator[Node]:
    node = Node(workdir, **kwargs)
    node.start()
    try:
        node.wait_ready()
        yield node
    finally:
        if node.process is not None and node.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.stop()
