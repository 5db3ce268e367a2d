"""``run_actor`` in a real process: status events, signals, grace and exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import trio
from supervisor_support import FAKE_ACTOR, node_env


@dataclass
class ActorProcess:
    process: trio.Process
    events: list[str] = field(default_factory=list)
    stderr: str = ""
    changed: trio.Event = field(default_factory=trio.Event)

    async def wait_event(self, event: str, timeout_s: float = 10.0) -> None:
        with trio.fail_after(timeout_s):
            while event not in self.events:
                await self.changed.wait()

    async def wait_stderr(self, text: str, timeout_s: float = 10.0) -> None:
        with trio.fail_after(timeout_s):
            while text not in self.stderr:
                await self.changed.wait()

    async def wait_exit(self, timeout_s: float = 10.0) -> int:
        with trio.fail_after(timeout_s):
            return await self.process.wait()

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


async def _read_events(stream: trio.lowlevel.FdStream, actor: ActorProcess) -> None:
    buffer = b""
    async with stream:
        async for chunk in stream:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            actor.events.extend(orjson.loads(line)["event"] for line in lines)
            actor.notify()


async def _read_stderr(actor: ActorProcess) -> None:
    assert actor.process.stderr is not None
    async for chunk in actor.process.stderr:
        actor.stderr += chunk.decode()
        actor.notify()


@asynccontextmanager
async def run_fake_actor(
    run_dir: Path, *, status_pipe: bool = True, **extra: str
) -> AsyncIterator[ActorProcess]:
    """Run fake_actor.py as ``producer``, with the test as its supervisor."""
    env = node_env(run_dir, **extra)
    read_fd, write_fd = os.pipe()
    if status_pipe:
        env["WEALL_ACTOR_STATUS_FD"] = str(write_fd)
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(FAKE_ACTOR), "producer"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            pass_fds=(write_fd,) if status_pipe else (),
            start_new_session=True,
        )
    finally:
        os.close(write_fd)
    actor = ActorProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_events, trio.lowlevel.FdStream(read_fd), actor)
            nursery.start_soon(_read_stderr, actor)
            yield actor
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        assert process.stderr is not None
        await process.stderr.aclose()


async def test_actor_reports_ready_then_heartbeats(run_dir: Path) -> None:
    async with run_fake_actor(run_dir) as actor:
        await actor.wait_event("ready")
        await trio.sleep(0.35)
        assert actor.events[0] in ("heartbeat", "ready")
        assert actor.events.count("heartbeat") >= 3
        actor.process.send_signal(signal.SIGTERM)
        assert await actor.wait_exit() == 0
        # Heartbeats go on while the actor drains, so "stopping" need not be last.
        assert "stopping" in actor.events[actor.events.index("ready") :]
    for phrase in ("started", "ready", "stopping signal=SIGTERM", "stopped code=0"):
        assert f"weall.actors.producer: {phrase}" in actor.stderr


async def test_actor_logs_json_lines(run_dir: Path) -> None:
    async with run_fake_actor(run_dir, WEALL_LOG_FORMAT="json") as actor:
        await actor.wait_event("ready")
        actor.process.send_signal(signal.SIGINT)
        assert await actor.wait_exit() == 0
    records = [orjson.loads(line) for line in actor.stderr.splitlines()]
    messages = [record["message"].split()[0] for record in records]
    assert messages[0] == "started"
    assert "ready" in messages
    assert messages[-1] == "stopped"
    assert {record["actor"] for record in records} == {"producer"}
    assert {record["pid"] for record in records} == {actor.process.pid}


async def test_actor_without_supervisor_only_logs(run_dir: Path) -> None:
    async with run_fake_actor(run_dir, status_pipe=False) as actor:
        await actor.wait_stderr("weall.actors.producer: ready")
        actor.process.send_signal(signal.SIGTERM)
        assert await actor.wait_exit() == 0
    assert actor.events == []
    assert "WARNING" not in actor.stderr


@pytest.mark.parametrize(
    ("mode", "code", "summary"),
    [
        (
            "crash_at_start",
            1,
            "crashed: RuntimeError: producer crashed at start on purpose",
        ),
        (
            "crash_after",
            1,
            "crashed: RuntimeError: producer crashed after start on purpose",
        ),
        (
            "startup_error",
            78,
            "startup failed: producer refuses to start: schema version 99",
        ),
    ],
    ids=["crash-at-start", "crash-after-ready", "startup-error"],
)
async def test_actor_exit_code_by_failure(
    run_dir: Path, mode: str, code: int, summary: str
) -> None:
    async with run_fake_actor(run_dir, FAKE_MODE=mode) as actor:
        assert await actor.wait_exit() == code
    assert summary in actor.stderr
    if code == 78:
        assert "Traceback" not in actor.stderr
    else:
        assert "Traceback" in actor.stderr


async def test_actor_cancelled_after_grace(run_dir: Path) -> None:
    async with run_fake_actor(run_dir, FAKE_DRAIN_S="30", FAKE_GRACE_S="0.3") as actor:
        await actor.wait_event("ready")
        begun = trio.current_time()
        actor.process.send_signal(signal.SIGTERM)
        assert await actor.wait_exit() == 0
        elapsed = trio.current_time() - begun
    # The drain would take 30 s; the grace of 0.3 s cuts it short.
    assert elapsed >= 0.3
    assert elapsed < 10.0
    assert "run() did not return within grace_s=0.3, cancelled" in actor.stderr


async def test_actor_second_signal_cancels_at_once(run_dir: Path) -> None:
    async with run_fake_actor(run_dir, FAKE_DRAIN_S="30", FAKE_GRACE_S="20") as actor:
        await actor.wait_event("ready")
        actor.process.send_signal(signal.SIGTERM)
        await actor.wait_event("stopping")
        # Signals within 1 s of the first count as duplicates.
        await trio.sleep(1.1)
        begun = trio.current_time()
        actor.process.send_signal(signal.SIGTERM)
        assert await actor.wait_exit() == 0
        # Well below the grace of 20 s that it would wait out otherwise.
        assert trio.current_time() - begun < 10.0
    assert "second signal=SIGTERM, cancelling at once" in actor.stderr


async def test_actor_ignores_duplicate_signal(run_dir: Path) -> None:
    async with run_fake_actor(run_dir, FAKE_DRAIN_S="0.6", FAKE_GRACE_S="20") as actor:
        await actor.wait_event("ready")
        actor.process.send_signal(signal.SIGTERM)
        await actor.wait_event("stopping")
        begun = trio.current_time()
        actor.process.send_signal(signal.SIGTERM)
        assert await actor.wait_exit() == 0
        assert trio.current_time() - begun >= 0.4
    assert "ignoring repeated signal=SIGTERM while stopping" in actor.stderr
    assert "cancelling at once" not in actor.stderr


async def test_actor_stops_when_supervisor_gone(run_dir: Path) -> None:
    env = node_env(run_dir)
    read_fd, write_fd = os.pipe()
    env["WEALL_ACTOR_STATUS_FD"] = str(write_fd)
    process = await trio.lowlevel.open_process(
        [sys.executable, str(FAKE_ACTOR), "producer"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        pass_fds=(write_fd,),
        start_new_session=True,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as status:
            assert b"ready" in status.readline() + status.readline()
        with trio.fail_after(5):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def test_stop_event_outside_actor_raises() -> None:
    from weall.actors._base import stop_event

    with pytest.raises(RuntimeError, match="only available inside run_actor"):
        stop_event()
