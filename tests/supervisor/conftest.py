"""Fixtures that run real supervisor and actor processes.

``start_node`` runs ``harness.py`` (the generic supervisor over
``fake_actor.py``) in a fresh run directory under /tmp, keeping socket paths
short. Each test gets short heartbeat settings. At teardown every process
that a test started is killed by pid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio
from supervisor_support import HARNESS, Node, node_env


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep settings of the developer's shell out of the processes under test."""
    for name in list(os.environ):
        if name.startswith(("WEALL_", "FAKE_", "HARNESS_")) or name == "PORT":
            monkeypatch.delenv(name)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="wsv-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def start_node(nursery: trio.Nursery, run_dir: Path) -> AsyncIterator[StartNode]:
    nodes: list[Node] = []

    async def start(actors: str = "producer,api", **extra: str) -> Node:
        env = node_env(run_dir, HARNESS_ACTORS=actors, **extra)
        process = await trio.lowlevel.open_process(
            [sys.executable, str(HARNESS)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(run_dir),
        )
        node = Node(process, env)
        nodes.append(node)
        nursery.start_soon(node.collect_stdout)
        nursery.start_soon(node.collect_stderr)
        return node

    yield start
    for node in nodes:
        node.kill_everything()
        with trio.move_on_after(5):
            await node.process.wait()
        for stream in (node.process.stdout, node.process.stderr):
            if stream is not None:
                await stream.aclose()


RunCli = Callable[..., Awaitable["subprocess.CompletedProcess[bytes]"]]


@pytest.fixture
def cli(run_dir: Path) -> RunCli:
    """Return a function that runs ``python -m weall ARGS`` in ``run_dir``."""

    async def run(*args: str, **extra: str) -> subprocess.CompletedProcess[bytes]:
        return await trio.run_process(
            [sys.executable, "-m", "weall", *args],
            env=node_env(run_dir, **extra),
            cwd=str(run_dir),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )

    return run
