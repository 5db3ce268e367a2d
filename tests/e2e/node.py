"""A real ``weall supervise`` in a temporary directory, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from weall.protocol import keys
from weall.protocol.envelope import build_envelope

__all__ = [
    "Node",
    "Submitter",
    "committed",
    "free_port",
    "running_node",
    "wait_committed",
]


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


class Submitter(threading.Thread):
    """Posts as the founder, one nonce after another, and records every response.

    ``acked`` lists the tx ids that got 202 or 200. ``responses`` lists
    ``(time.monotonic(), status, error code or None)`` of every response.
    """

    def __init__(self, node: Node, *, pause_s: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.pause_s = pause_s
        self.key = keys.load_key_file(node.workdir / "data" / "keys" / "founder.key")
        self.acked: list[str] = []
        self.responses: list[tuple[float, int, str | None]] = []
        self.stopping = threading.Event()
        self.nonce = node.get("/v1/accounts/@founder").json()["next_nonce"]

    def run(self) -> None:
        client = httpx.Client(base_url=self.node.url, timeout=5.0)
        envelope = self._next()
        while not self.stopping.is_set():
            try:
                response = client.post("/v1/tx/submit", json=envelope)
            except httpx.HTTPError:
                time.sleep(0.05)  # the api is restarting; send the same envelope again
                continue
            code = None if response.is_success else response.json()["error"]["code"]
            self.responses.append((time.monotonic(), response.status_code, code))
            if response.status_code in (200, 202):
                self.acked.append(response.json()["tx_id"])
                self.nonce += 1
                envelope = self._next()
                time.sleep(self.pause_s)
            elif code == "nonce_too_high":
                time.sleep(0.1)  # the window is full until the next block
            else:
                time.sleep(0.05)
        client.close()

    def _next(self) -> dict[str, object]:
        return build_envelope(
            self.key,
            chain_id="weall-dev",
            tx_type="CONTENT_POST_CREATE",
            signer="@founder",
            nonce=self.nonce,
            payload={"body": f"load {self.nonce}"},
        )


def committed(node: Node, tx_ids: set[str]) -> set[str]:
    """Return the ids among ``tx_ids`` that the database contains as committed."""
    path = node.workdir / "data" / "weall.db"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT tx_id FROM txs WHERE status = 'committed'"
        ).fetchall()
    finally:
        conn.close()
    return tx_ids & {row[0] for row in rows}


def wait_committed(node: Node, tx_ids: list[str], timeout: float = 60.0) -> None:
    """Wait until every transaction in ``tx_ids`` is committed."""
    deadline = time.monotonic() + timeout
    remaining = set(tx_ids)
    while remaining and time.monotonic() < deadline:
        remaining -= committed(node, remaining)
        time.sleep(0.3)
    assert not remaining, f"{len(remaining)} acknowledged transactions not committed"
