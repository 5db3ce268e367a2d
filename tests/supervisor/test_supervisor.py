"""The supervisor with real processes: start order, output, restarts, liveness, stop."""

from __future__ import annotations

import os
import re
import signal

import orjson
import pytest
import trio
from supervisor_support import Node, process_alive, process_gone

ALL_ACTORS = "producer,checkpointer,pinner,healer,api"
ORDER = ALL_ACTORS.split(",")


def _retry_delays(node: Node, actor: str) -> list[tuple[float, int]]:
    pattern = re.compile(rf"restarting actor={actor} retry_in=([\d.]+) failures=(\d+)")
    return [
        (float(match.group(1)), int(match.group(2)))
        for line in node.lines
        if (match := pattern.search(line))
    ]


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"]
)
async def test_start_in_order_stop_in_reverse(
    start_node, signum: signal.Signals
) -> None:
    node = await start_node(ALL_ACTORS)
    await node.wait_for("all actors started")
    for before, after in zip(ORDER, ORDER[1:], strict=False):
        running = node.index_of(rf"running actor={before} ")
        assert node.index_of(rf"spawned actor={after} ") > running
    pids = node.pids()
    for pid in pids.values():
        assert os.getsid(pid) == pid, "each actor leads its own session"

    begun = trio.current_time()
    node.send_signal(signum)
    assert await node.wait_exit() == 0
    stop_s = trio.current_time() - begun
    # Every actor drains at once, so no grace may expire. The bound leaves room
    # for five interpreters to exit on a loaded machine and stays below the
    # 10 s that five expired graces of 2 s would take.
    assert node.count("SIGKILL") == 0
    assert stop_s < 9.0

    stopped = [
        node.index_of(rf"supervisor \| .* stopped actor={name} ") for name in ORDER
    ]
    assert stopped == sorted(stopped, reverse=True)
    own_stops = [
        node.index_of(rf"^{name} \| .* stopping signal=SIGTERM") for name in ORDER
    ]
    assert own_stops == sorted(own_stops, reverse=True)
    for pid in pids.values():
        assert not process_alive(pid)
    assert node.stderr == ""


async def test_ready_gates_next_start(start_node) -> None:
    node = await start_node(
        "producer,api", FAKE_MODE_PRODUCER="slow_start", FAKE_START_DELAY_S="0.5"
    )
    await node.wait_for("all actors started")
    running = node.index_of(r"running actor=producer ")
    assert node.index_of(r"spawned actor=api ") > running
    start_s = float(re.search(r"start_s=([\d.]+)", node.lines[running]).group(1))
    assert start_s >= 0.5


async def test_text_output_prefixed_with_actor(start_node) -> None:
    node = await start_node("producer,api")
    await node.wait_for("all actors started")
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0
    assert "producer | hello from producer on stdout" in node.lines
    assert "api | hello from api on stdout" in node.lines
    prefixes = {line.split(" | ", 1)[0] for line in node.lines if line}
    assert prefixes == {"supervisor", "producer", "api"}
    ready = node.lines[node.index_of(r"^api \| .*weall\.actors\.api: ready")]
    assert re.match(
        r"^api \| \d{4}-\d\d-\d\dT[\d:.]+Z INFO pid=\d+ weall\.actors\.api: ready",
        ready,
    )


async def test_json_output_one_object_per_line(start_node) -> None:
    node = await start_node("producer,api", WEALL_LOG_FORMAT="json")
    await node.wait_for("all actors started")
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0
    records = [orjson.loads(line) for line in node.lines if line]
    for record in records:
        assert {"time", "level", "actor", "pid", "logger", "message"} <= set(record)
    assert {record["actor"] for record in records} == {"supervisor", "producer", "api"}
    printed = [r for r in records if r["message"] == "hello from api on stdout"]
    assert len(printed) == 1
    assert printed[0]["logger"] == "stdout"
    assert printed[0]["pid"] == node.pids()["api"]
    spawned = [r for r in records if r["message"].startswith("spawned actor=")]
    assert {r["actor"] for r in spawned} == {"supervisor"}


async def test_killed_actor_restarted_alone(start_node) -> None:
    node = await start_node("producer,checkpointer,api")
    await node.wait_for("all actors started")
    before = node.pids()
    mark = len(node.lines)
    begun = trio.current_time()
    os.kill(before["checkpointer"], signal.SIGKILL)
    await node.wait_for(r"running actor=checkpointer ", start=mark)
    latency = trio.current_time() - begun
    after = node.pids()
    assert after["checkpointer"] != before["checkpointer"]
    assert after["producer"] == before["producer"]
    assert after["api"] == before["api"]
    assert process_alive(after["producer"])
    assert process_alive(after["api"])
    warning = node.lines[node.index_of(r"exited unexpectedly actor=checkpointer", mark)]
    assert " WARNING " in warning
    assert "signal=SIGKILL" in warning
    # A backoff of at most 0.05 s, then the start of a Python process; 10 s
    # leaves margin for a loaded machine.
    assert latency < 10.0


async def test_budget_exhausted_gives_up(start_node) -> None:
    node = await start_node(
        "producer,api",
        FAKE_MODE_API="crash_after",
        FAKE_CRASH_AFTER_S="0.05",
        WEALL_RESTART_MAX="3",
        WEALL_RESTART_WINDOW_S="30",
    )
    assert await node.wait_exit() == 1
    assert node.stderr.splitlines() == [
        "weall supervise: gave up on actor api after 3 restarts within 30 s, "
        "last exit: exit code 1"
    ]
    gave_up = node.lines[node.index_of(r"gave up actor=api")]
    assert " ERROR " in gave_up
    assert node.count(r"spawned actor=api ") == 4
    assert node.count(r"spawned actor=producer ") == 1
    assert node.index_of(r"stopped actor=producer .*") > node.index_of(
        r"gave up actor=api"
    )
    delays = _retry_delays(node, "api")
    assert [failures for _, failures in delays] == [1, 2, 3]
    for delay, failures in delays:
        nominal = min(0.5, 0.05 * 2 ** (failures - 1))
        assert nominal * 0.8 - 0.001 <= delay <= nominal + 0.001


async def test_backoff_resets_after_stable_run(start_node) -> None:
    node = await start_node(
        "api",
        FAKE_MODE_API="crash_after",
        FAKE_CRASH_AFTER_S="0.4",
        HARNESS_BACKOFF_RESET_S="0.2",
    )
    await node.wait_for(r"restarting actor=api .*", timeout_s=10)
    await node.wait_for(
        r"running actor=api ", start=node.index_of(r"restarting actor=api")
    )
    await node.wait_for(
        r"restarting actor=api .*failures=\d", start=len(node.lines) - 1
    )
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0
    assert {failures for _, failures in _retry_delays(node, "api")} == {1}


async def test_startup_crash_leaves_others_running(start_node) -> None:
    node = await start_node(
        "producer,checkpointer,api",
        FAKE_MODE_API="crash_at_start",
        FAKE_CRASH_TIMES="2",
    )
    await node.wait_for("all actors started")
    assert node.count(r"spawned actor=api ") == 3
    assert node.count(r"spawned actor=producer ") == 1
    assert node.count(r"spawned actor=checkpointer ") == 1
    pids = node.pids()
    assert process_alive(pids["producer"])
    assert process_alive(pids["checkpointer"])
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0


async def test_config_exit_stops_node(start_node) -> None:
    node = await start_node(
        "producer,api", FAKE_MODE_API="startup_error", WEALL_RESTART_MAX="5"
    )
    assert await node.wait_exit() == 78
    assert node.stderr.splitlines() == [
        "weall supervise: actor api failed with exit code 78 (invalid settings or a "
        "rejected start) and was not restarted: api refuses to start: schema version "
        "99 is newer than this binary"
    ]
    assert node.count(r"spawned actor=api ") == 1
    assert node.count(r"spawned actor=producer ") == 1
    assert node.count(r"restarting actor=") == 0
    failed = node.index_of(r"ERROR .*actor failed with invalid settings .*actor=api ")
    assert node.index_of(r"stopped actor=producer ") > failed


async def test_config_exit_after_ready_stops_node(start_node) -> None:
    node = await start_node(
        "producer,api",
        FAKE_MODE_PRODUCER="startup_error_after",
        FAKE_CRASH_AFTER_S="0.3",
    )
    await node.wait_for("all actors started")
    assert await node.wait_exit() == 78
    lines = node.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "weall supervise: actor producer failed with exit code 78 "
    )
    assert lines[0].endswith(": producer lost its database lock to another producer")
    assert node.count(r"spawned actor=producer ") == 1
    assert node.count(r"spawned actor=api ") == 1
    # The api was stopped in order, not killed.
    assert node.count(r"stopped actor=api .* code=0 ") == 1


async def test_stopped_process_killed_after_heartbeat_timeout(start_node) -> None:
    node = await start_node("producer,api")
    await node.wait_for("all actors started")
    before = node.pids()
    mark = len(node.lines)
    begun = trio.current_time()
    os.kill(before["producer"], signal.SIGSTOP)
    await node.wait_for(r"heartbeat timed out actor=producer", start=mark, timeout_s=5)
    detected = trio.current_time() - begun
    await node.wait_for(r"running actor=producer ", start=mark)
    after = node.pids()
    assert after["producer"] != before["producer"]
    assert after["api"] == before["api"]
    # WEALL_HEARTBEAT_TIMEOUT_S is 1.0 and the interval 0.1, so detection comes
    # between 0.9 s and 1.1 s after SIGSTOP, plus scheduling delays. The lower
    # bound shows the timeout is not cut short. The upper one allows 2.9 s of
    # delay on a loaded machine and still fails if the timeout is not applied.
    assert detected >= 0.8
    assert detected <= 4.0
    assert not process_alive(before["producer"])


async def test_blocked_event_loop_detected(start_node) -> None:
    node = await start_node("producer", FAKE_MODE="hang", FAKE_HANG_AFTER_S="0.2")
    await node.wait_for("all actors started")
    first = node.pids()["producer"]
    await node.wait_for(r"heartbeat timed out actor=producer", timeout_s=5)
    await node.wait_for(
        r"spawned actor=producer ", start=node.index_of("heartbeat timed out")
    )
    assert node.pids()["producer"] != first
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0


async def test_start_timeout_kills_and_retries(start_node) -> None:
    node = await start_node(
        "producer,api", FAKE_MODE_API="never_ready", HARNESS_START_TIMEOUT_S="0.5"
    )
    await node.wait_for(r"start timed out actor=api .*timeout_s=0.5")
    exit_line = await node.wait_for(r"exited unexpectedly actor=api ")
    assert "signal=SIGKILL" in node.lines[exit_line]
    assert "reason=start timeout" in node.lines[exit_line]
    await node.wait_for(r"spawned actor=api ", start=exit_line)
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0
    assert node.count(r"spawned actor=producer ") == 1


async def test_ignored_sigterm_escalates_to_sigkill(start_node) -> None:
    node = await start_node(
        "producer,api", FAKE_MODE_API="ignore_sigterm", HARNESS_GRACE_S="0.5"
    )
    await node.wait_for("all actors started")
    begun = trio.current_time()
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0
    # The grace is 0.5 s; without the SIGKILL the stop would last until the
    # stop timeout of 27 s.
    assert trio.current_time() - begun < 10.0
    warning = node.lines[node.index_of(r"grace expired, sending SIGKILL actor=api")]
    assert " WARNING " in warning
    assert node.index_of(r"stopping actor=producer ") > node.index_of(
        r"stopped actor=api "
    )


async def test_second_signal_hurries_stop(start_node) -> None:
    node = await start_node(
        "producer,api", FAKE_MODE_API="ignore_sigterm", HARNESS_GRACE_S="20"
    )
    await node.wait_for("all actors started")
    node.send_signal(signal.SIGTERM)
    await node.wait_for(r"stopping actor=api ")
    # Signals within 1 s of the first count as duplicates.
    await trio.sleep(1.1)
    begun = trio.current_time()
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0
    # Well below the api's grace of 20 s, which it would wait out otherwise.
    assert trio.current_time() - begun < 10.0
    assert node.count(r"hurrying stop reason=second signal SIGTERM") == 1
    assert node.count(r"killing at once actor=api ") == 1


async def test_stop_timeout_bounds_whole_stop(start_node) -> None:
    node = await start_node(
        "producer,checkpointer,api",
        FAKE_MODE="ignore_sigterm",
        HARNESS_GRACE_S="5",
        HARNESS_STOP_TIMEOUT_S="1.0",
    )
    await node.wait_for("all actors started")
    begun = trio.current_time()
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0
    # Three graces of 5 s would take 15 s; the stop timeout cuts it to 1 s.
    assert trio.current_time() - begun < 8.0
    assert node.count(r"grace expired, sending SIGKILL") == 3


@pytest.mark.parametrize(
    ("restart", "mode", "level"),
    [("temporary", "crash_after", "WARNING"), ("transient", "exit_clean", "INFO")],
    ids=["temporary-crash", "transient-clean-exit"],
)
async def test_restart_type_not_restarted(
    start_node, restart: str, mode: str, level: str
) -> None:
    node = await start_node(
        "producer,api",
        FAKE_MODE_API=mode,
        FAKE_CRASH_AFTER_S="0.1",
        FAKE_EXIT_AFTER_S="0.1",
        HARNESS_RESTART_API=restart,
    )
    exit_line = node.lines[await node.wait_for(r"exited (unexpectedly )?actor=api ")]
    assert f" {level} " in exit_line
    await trio.sleep(0.5)
    assert node.count(r"spawned actor=api ") == 1
    assert process_alive(node.pids()["producer"])
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0


async def test_sigterm_to_every_process_stops_cleanly(start_node) -> None:
    # Heroku sends SIGTERM to every process of a dyno at once.
    node = await start_node("producer,checkpointer,api", FAKE_DRAIN_S="0.3")
    await node.wait_for("all actors started")
    pids = node.pids()
    node.send_signal(signal.SIGTERM)
    for pid in pids.values():
        os.kill(pid, signal.SIGTERM)
    assert await node.wait_exit() == 0
    assert node.count("cancelling at once") == 0
    assert node.count("SIGKILL") == 0
    for name in pids:
        assert node.count(rf"^{name} \| .*stopped code=0") == 1


async def test_leftover_processes_killed_with_actor(start_node, run_dir) -> None:
    node = await start_node("producer,api", FAKE_MODE_API="with_helper")
    await node.wait_for("all actors started")
    helper = int((run_dir / "api.helper").read_text())
    assert not process_gone(helper)
    mark = len(node.lines)
    os.kill(node.pids()["api"], signal.SIGKILL)
    warning = node.lines[
        await node.wait_for(r"killed leftover processes actor=api", start=mark)
    ]
    assert " WARNING " in warning
    # The helper is not a child of the test, so there is nothing to wait on.
    with trio.fail_after(5):
        while not process_gone(helper):  # noqa: ASYNC110
            await trio.sleep(0.05)
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0


async def test_spawn_failure_counts_as_failure(start_node, run_dir) -> None:
    missing = str(run_dir / "no-such-program")
    node = await start_node(
        "producer,api", HARNESS_ARGV_API=missing, WEALL_RESTART_MAX="2"
    )
    assert await node.wait_exit() == 1
    assert node.count(r"ERROR .*spawn failed actor=api ") == 3
    assert node.count(r"spawned actor=producer ") == 1
    lines = node.stderr.splitlines()
    assert len(lines) == 1
    assert "gave up on actor api after 2 restarts" in lines[0]
    assert "last exit: not started (spawn failed: " in lines[0]


# A platform may repeat its SIGTERM. A process manager that gets Ctrl-C sends
# SIGTERM, and the terminal's SIGINT may reach the supervisor too. Either way
# one request arrives twice.
@pytest.mark.parametrize(
    "second", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"]
)
async def test_quick_repeated_signal_ignored(
    start_node, second: signal.Signals
) -> None:
    node = await start_node("producer,api", FAKE_DRAIN_S="0.3")
    await node.wait_for("all actors started")
    node.send_signal(signal.SIGTERM)
    await node.wait_for(r"stopping node reason=signal SIGTERM")
    node.send_signal(second)
    assert await node.wait_exit() == 0
    assert node.count(rf"ignoring repeated signal={second.name} while stopping") == 1
    assert node.count(r"hurrying stop") == 0
    assert node.count(r"SIGKILL") == 0


async def test_second_sigint_hurries_at_once(start_node) -> None:
    # A terminal delivers each Ctrl-C once, so a quick second one is meant.
    node = await start_node(
        "producer,api", FAKE_MODE_API="ignore_sigterm", HARNESS_GRACE_S="20"
    )
    await node.wait_for("all actors started")
    node.send_signal(signal.SIGINT)
    await node.wait_for(r"stopping actor=api ")
    begun = trio.current_time()
    node.send_signal(signal.SIGINT)
    assert await node.wait_exit() == 0
    # Well below the api's grace of 20 s.
    assert trio.current_time() - begun < 10.0
    assert node.count(r"hurrying stop reason=second signal SIGINT") == 1
    assert node.count(r"killing at once actor=api ") == 1
    assert node.count(r"ignoring repeated signal") == 0
