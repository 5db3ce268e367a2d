"""A stand-in actor for the supervisor tests, built on ``weall.actors._base``.

Run as ``python fake_actor.py NAME``. ``FAKE_MODE_<NAME>`` (upper case) or
else ``FAKE_MODE`` selects the behaviour:

normal
    ready at once, prints one line on stdout, drains ``FAKE_DRAIN_S`` on stop
crash_at_start
    raises before ready; with ``FAKE_CRASH_TIMES=N`` only the first N starts
    crash (counted in ``FAKE_STATE_DIR``), later ones behave as ``normal``
crash_after
    ready, then raises after ``FAKE_CRASH_AFTER_S``
startup_error
    raises ``StartupError`` before ready (exit code 78)
startup_error_after
    ready, then raises ``StartupError`` after ``FAKE_CRASH_AFTER_S`` (exit code 78)
slow_start
    waits ``FAKE_START_DELAY_S`` before it reports ready
never_ready
    never calls ``task_status.started()``
hang
    ready, then blocks the event loop after ``FAKE_HANG_AFTER_S``, so
    heartbeats stop
ignore_sigterm
    ready, then ignores the stop event and shields itself from cancellation
exit_clean
    ready, then returns after ``FAKE_EXIT_AFTER_S`` (exit code 0)
with_helper
    starts a helper process, which stays in the actor's process group, and
    writes the helper's pid to ``FAKE_STATE_DIR/<NAME>.helper`` before it reports ready
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import trio

from weall.actors._base import run_actor, stop_event
from weall.config import Config, load
from weall.errors import StartupError

NAME = sys.argv[1]
log = logging.getLogger(f"weall.actors.{NAME}")


def _mode() -> str:
    return os.environ.get(f"FAKE_MODE_{NAME.upper()}") or os.environ.get(
        "FAKE_MODE", "normal"
    )


def _seconds(variable: str, default: float) -> float:
    return float(os.environ.get(variable, default))


def _crashes_this_time() -> bool:
    times = os.environ.get("FAKE_CRASH_TIMES")
    if times is None:
        return True
    counter = Path(os.environ["FAKE_STATE_DIR"]) / f"{NAME}.starts"
    starts = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(starts + 1))
    return starts < int(times)


async def _start(mode: str) -> None:
    """Behave as ``mode`` says until the actor would report ready."""
    if mode == "crash_at_start" and _crashes_this_time():
        raise RuntimeError(f"{NAME} crashed at start on purpose")
    if mode == "startup_error":
        raise StartupError(
            f"{NAME} refuses to start: schema version 99 is newer than this binary"
        )
    if mode == "never_ready":
        await trio.sleep_forever()
    if mode == "slow_start":
        await trio.sleep(_seconds("FAKE_START_DELAY_S", 0.5))
    if mode == "with_helper":
        helper = await trio.lowlevel.open_process(
            [sys.executable, "-c", "import time; time.sleep(60)"]
        )
        helper_file = Path(os.environ["FAKE_STATE_DIR"]) / f"{NAME}.helper"
        helper_file.write_text(str(helper.pid))
    print(f"hello from {NAME} on stdout", flush=True)


async def _serve(mode: str) -> None:
    """Behave as ``mode`` says once ready, then drain on the stop event."""
    if mode == "crash_after":
        await trio.sleep(_seconds("FAKE_CRASH_AFTER_S", 0.1))
        raise RuntimeError(f"{NAME} crashed after start on purpose")
    if mode == "startup_error_after":
        await trio.sleep(_seconds("FAKE_CRASH_AFTER_S", 0.1))
        raise StartupError(f"{NAME} lost its database lock to another producer")
    if mode == "hang":
        await trio.sleep(_seconds("FAKE_HANG_AFTER_S", 0.0))
        # Blocking the event loop on purpose: no task runs, no heartbeat goes out.
        time.sleep(3600)  # noqa: ASYNC251
    if mode == "ignore_sigterm":
        with trio.CancelScope(shield=True):
            await trio.sleep_forever()
    if mode == "exit_clean":
        await trio.sleep(_seconds("FAKE_EXIT_AFTER_S", 0.1))
        return
    await stop_event().wait()
    log.info("draining drain_s=%s", _seconds("FAKE_DRAIN_S", 0.0))
    await trio.sleep(_seconds("FAKE_DRAIN_S", 0.0))


async def run(
    config: Config, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    mode = _mode()
    await _start(mode)
    task_status.started()
    await _serve(mode)


if __name__ == "__main__":
    sys.exit(run_actor(NAME, run, load(), grace_s=_seconds("FAKE_GRACE_S", 1.0)))
