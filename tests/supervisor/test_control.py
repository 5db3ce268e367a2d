"""The control socket through the real CLI, the status file, and the CLI's errors."""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys

import orjson
import pytest
from supervisor_support import all_running, process_alive, wait_status_file

from weall.actors.cli import DRAIN_GRACE_S
from weall.config import Config
from weall.errors import ConfigError
from weall.supervisor._status_file import read_status_file, write_status_file
from weall.supervisor.cli import (
    build_specs,
    format_duration,
    parse_actor_list,
    resolve_actors,
)


async def test_cli_status_restart_stop(start_node, cli) -> None:
    node = await start_node("producer,api")
    await node.wait_for("all actors started")
    before = node.pids()

    status = await cli("status")
    assert status.returncode == 0
    table = status.stdout.decode().splitlines()
    assert table[0].startswith(f"supervisor pid={node.pid} state=running uptime=")
    assert table[1].split() == [
        "ACTOR",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST",
        "EXIT",
    ]
    assert table[2].split()[:3] == ["producer", "running", str(before["producer"])]
    assert table[3].split()[:3] == ["api", "running", str(before["api"])]

    restart = await cli("restart", "api")
    assert restart.returncode == 0, restart.stderr
    after = node.pids()
    assert after["api"] != before["api"]
    assert after["producer"] == before["producer"]
    assert restart.stdout.decode() == f"restarted api pid={after['api']}\n"
    assert not process_alive(before["api"])

    reply = orjson.loads((await cli("status", "--json")).stdout)
    actors = {actor["name"]: actor for actor in reply["actors"]}
    assert actors["api"]["restarts"] == 1
    assert actors["api"]["pid"] == after["api"]
    assert actors["api"]["last_exit"]["reason"] == "restart"
    assert actors["producer"]["restarts"] == 0
    assert actors["producer"]["uptime_s"] > 0

    stop = await cli("stop")
    assert stop.returncode == 0
    assert stop.stdout.decode() == "stopped\n"
    assert await node.wait_exit() == 0
    assert node.stderr == ""


@pytest.mark.parametrize(
    "args",
    [("status",), ("status", "--check"), ("restart", "api"), ("stop",)],
    ids=["status", "status-check", "restart", "stop"],
)
async def test_cli_without_supervisor_fails(cli, args: tuple[str, ...]) -> None:
    result = await cli(*args)
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"weall {args[0]}: no supervisor is running: cannot connect to "
    )
    assert result.stdout == b""


async def test_cli_restart_unknown_actor(start_node, cli) -> None:
    node = await start_node("producer,api")
    await node.wait_for("all actors started")
    result = await cli("restart", "pinner")
    assert result.returncode == 1
    assert result.stderr.decode() == (
        "weall restart: unknown actor 'pinner' (this supervisor runs producer, api)\n"
    )
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0


async def test_cli_restart_reports_failed_start(start_node, cli, run_dir) -> None:
    node = await start_node(
        "producer,api", FAKE_MODE_API="crash_at_start", FAKE_CRASH_TIMES="1"
    )
    await node.wait_for("all actors started")
    # The next start of api crashes again, the one after that succeeds.
    (run_dir / "api.starts").write_text("0")
    result = await cli("restart", "api")
    assert result.returncode == 1
    assert result.stderr.decode().startswith(
        "weall restart: api did not start again: state backoff, last exit exit code 1"
    )
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0


async def test_status_file_follows_states(start_node, run_dir) -> None:
    write_status_file(run_dir, {"other": {"state": "running", "pid": 1}}, ["other"])
    node = await start_node("producer,api")
    await node.wait_for("all actors started")
    pids = node.pids()
    entries = await wait_status_file(run_dir, all_running("producer", "api"))
    assert entries["other"] == {"state": "running", "pid": 1}
    for name in ("producer", "api"):
        entry = entries[name]
        assert set(entry) == {
            "state",
            "pid",
            "restarts",
            "started_at_ms",
            "last_exit",
            "supervisor_pid",
        }
        assert entry["state"] == "running"
        assert entry["pid"] == pids[name]
        assert entry["supervisor_pid"] == node.pid
        assert entry["last_exit"] is None
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0
    entries = read_status_file(run_dir)
    assert entries["api"]["state"] == "stopped"
    assert entries["api"]["pid"] is None
    assert entries["api"]["last_exit"]["reason"] == "stop"
    assert entries["other"] == {"state": "running", "pid": 1}
    assert not (run_dir / "supervisor.sock").exists()


async def test_second_supervisor_refused(start_node) -> None:
    first = await start_node("producer")
    await first.wait_for("all actors started")
    second = await start_node("producer")
    assert await second.wait_exit(timeout_s=10) == 78
    lines = second.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("weall supervise: another supervisor is running: ")
    assert second.count("spawned") == 0
    assert process_alive(first.pids()["producer"])
    first.send_signal(signal.SIGTERM)
    assert await first.wait_exit() == 0


async def test_control_socket_setting_separates_supervisors(
    start_node, run_dir, cli
) -> None:
    first = await start_node("producer", WEALL_CONTROL_SOCKET=str(run_dir / "a.sock"))
    second = await start_node("api", WEALL_CONTROL_SOCKET=str(run_dir / "b.sock"))
    await first.wait_for("all actors started")
    await second.wait_for("all actors started")
    reply = orjson.loads(
        (
            await cli("status", "--json", WEALL_CONTROL_SOCKET=str(run_dir / "b.sock"))
        ).stdout
    )
    assert [actor["name"] for actor in reply["actors"]] == ["api"]
    entries = read_status_file(run_dir)
    assert entries["producer"]["supervisor_pid"] == first.pid
    assert entries["api"]["supervisor_pid"] == second.pid
    for node in (first, second):
        node.send_signal(signal.SIGTERM)
        assert await node.wait_exit() == 0


async def test_supervise_rejects_unknown_actor(cli) -> None:
    result = await cli("supervise", "--actors", "producer,bogus")
    assert result.returncode == 2
    assert "unknown actor bogus" in result.stderr.decode()


async def test_supervise_invalid_setting_exits_78(cli) -> None:
    result = await cli("supervise", WEALL_LOG_LEVEL="LOUD")
    assert result.returncode == 78
    assert result.stderr.decode() == (
        "weall supervise: WEALL_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, "
        "CRITICAL (got 'LOUD')\n"
    )


async def test_supervise_refused_start_exits_78(cli, run_dir) -> None:
    missing = run_dir / "missing-genesis.json"
    result = await cli("supervise", WEALL_GENESIS_PATH=str(missing))
    assert result.returncode == 78
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("weall supervise: ")
    assert b"spawned" not in result.stdout


async def test_actor_command_invalid_setting_exits_78(cli) -> None:
    result = await cli("actor", "producer", WEALL_HEARTBEAT_INTERVAL_S="fast")
    assert result.returncode == 78
    assert result.stderr.decode() == (
        "weall actor: WEALL_HEARTBEAT_INTERVAL_S: must be a number (got 'fast')\n"
    )


async def test_actor_command_rejects_unknown_name(cli) -> None:
    result = await cli("actor", "bogus")
    assert result.returncode == 2
    assert "invalid choice: 'bogus'" in result.stderr.decode()


def test_parse_actor_list_returns_start_order() -> None:
    assert parse_actor_list("api,producer") == ("producer", "api")
    assert parse_actor_list(" healer , healer,pinner ") == ("pinner", "healer")


def test_parse_actor_list_rejects_bad_lists() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="unknown actor nope"):
        parse_actor_list("producer,nope")
    with pytest.raises(argparse.ArgumentTypeError, match="at least one"):
        parse_actor_list(" , ")


def test_build_specs_runs_weall_actor() -> None:
    specs = build_specs(("producer", "checkpointer", "pinner", "healer", "api"))
    assert [spec.name for spec in specs] == [
        "producer",
        "checkpointer",
        "pinner",
        "healer",
        "api",
    ]
    for spec in specs:
        assert spec.argv == (sys.executable, "-m", "weall", "actor", spec.name)
        assert spec.restart.value == "permanent"
        assert spec.shutdown_grace_s > DRAIN_GRACE_S[spec.name]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (4.9, "4s"),
        (125, "2m05s"),
        (3 * 3600 + 120, "3h02m"),
        (2 * 86400 + 3600, "2d01h"),
    ],
    ids=["none", "seconds", "minutes", "hours", "days"],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_resolve_actors_by_node_kind() -> None:
    producer_node = Config()
    follower_node = Config().with_changes(upstream_url="https://node.example.org")
    assert resolve_actors(None, producer_node)[0] == "producer"
    assert resolve_actors(None, follower_node)[0] == "follower"
    assert resolve_actors(("api",), follower_node) == ("api",)
    with pytest.raises(ConfigError, match="a follower node"):
        resolve_actors(("producer", "api"), follower_node)
    with pytest.raises(ConfigError, match="a producer node"):
        resolve_actors(("follower",), producer_node)


async def test_cli_restart_starts_exited_actor(start_node, cli) -> None:
    node = await start_node(
        "producer,api",
        FAKE_MODE_API="exit_clean",
        FAKE_EXIT_AFTER_S="0.2",
        HARNESS_RESTART_API="transient",
    )
    first_exit = await node.wait_for(r"exited actor=api ")
    first_pid = node.pids()["api"]
    result = await cli("restart", "api")
    assert result.returncode == 0, result.stderr
    assert node.pids()["api"] != first_pid
    await node.wait_for(r"exited actor=api ", start=first_exit + 1)
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0


async def test_status_check_needs_every_actor_running(start_node, cli) -> None:
    # A backoff of 4 s to 5 s keeps the killed actor out of the running state.
    node = await start_node(
        "producer,api", HARNESS_BACKOFF_BASE_S="5", HARNESS_BACKOFF_CAP_S="5"
    )
    await node.wait_for("all actors started")
    healthy = await cli("status", "--check")
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stderr == b""

    mark = len(node.lines)
    os.kill(node.pids()["api"], signal.SIGKILL)
    await node.wait_for(r"restarting actor=api ", start=mark)
    unhealthy = await cli("status", "--check")
    assert unhealthy.returncode == 1
    assert unhealthy.stderr.decode() == "weall status: not healthy: api backoff\n"
    table = unhealthy.stdout.decode().splitlines()
    assert table[3].split()[:2] == ["api", "backoff"]
    plain = await cli("status")
    assert plain.returncode == 0

    await node.wait_for(r"running actor=api ", start=mark, timeout_s=15)
    again = await cli("status", "--check")
    assert again.returncode == 0, again.stderr
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0


async def test_status_file_lock_does_not_block(start_node, run_dir, cli) -> None:
    # The test holds the status file's lock, as a stuck process might.
    lock_fd = os.open(run_dir / "actors.json.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        node = await start_node("producer,api")
        await node.wait_for("all actors started")
        status = await cli("status", "--check")
        assert status.returncode == 0, status.stderr

        before = node.pids()
        mark = len(node.lines)
        os.kill(before["api"], signal.SIGKILL)
        await node.wait_for(r"running actor=api ", start=mark)
        failed = node.lines[await node.wait_for(r"status file write failed")]
        assert " ERROR " in failed
        assert "timed out" in failed
        assert not (run_dir / "actors.json").exists()
    finally:
        os.close(lock_fd)

    after = node.pids()
    assert after["api"] != before["api"]
    entries = await wait_status_file(
        run_dir,
        lambda e: (
            e.get("api", {}).get("pid") == after["api"]
            and e["api"]["state"] == "running"
            and e.get("producer", {}).get("state") == "running"
        ),
    )
    assert entries["producer"]["pid"] == after["producer"]
    await node.wait_for(r"status file write recovered")
    assert node.count(r"status file write failed") == 1
    node.send_signal(signal.SIGTERM)
    assert await node.wait_exit() == 0
