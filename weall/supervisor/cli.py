"""``weall supervise``, ``weall status``, ``weall restart`` and ``weall stop``."""

from __future__ import annotations

import argparse
import functools
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import orjson
import trio

from weall import logs
from weall.actors.cli import DRAIN_GRACE_S
from weall.api.metrics_dir import (
    METRICS_DIR_ENV,
    mark_api_process_dead,
    metrics_dir,
    remove_metrics_dir,
    reset_metrics_dir,
)
from weall.config import (
    ACTOR_NAMES,
    ALL_ACTOR_NAMES,
    FOLLOWER_ACTOR_NAMES,
    Config,
    load,
)
from weall.errors import ConfigError, StartupError, WeallError
from weall.follow.status import describe_follower, read_follower_summary
from weall.supervisor.control import call_supervisor, wait_supervisor_gone
from weall.supervisor.spec import ActorSpec, RestartPolicy, RestartType
from weall.supervisor.supervisor import ActorConfigError, GaveUpError, Supervisor

__all__ = [
    "build_specs",
    "parse_actor_list",
    "register",
    "resolve_actors",
    "run_supervisor",
    "unhealthy",
]

EXIT_CONFIG: Final = 78
# The supervisor waits this much longer than an actor's own drain grace
# before it sends SIGKILL, so that the actor can cancel its work and exit.
KILL_MARGIN_S: Final = 2.0
# Seconds from spawn to ready. The producer may run a quick check of a large
# database first.
START_TIMEOUT_S: Final[Mapping[str, float]] = {"producer": 120.0}
DEFAULT_START_TIMEOUT_S: Final = 30.0
# ``weall restart`` waits at most this long for the new process to be ready.
RESTART_TIMEOUT_S: Final = 180.0


def parse_actor_list(text: str) -> tuple[str, ...]:
    """Parse ``--actors``: comma-separated names, returned in start order."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected at least one actor name")
    unknown = [name for name in names if name not in ALL_ACTOR_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown actor {', '.join(unknown)} (expected some of {','.join(ALL_ACTOR_NAMES)})"
        )
    return tuple(name for name in ALL_ACTOR_NAMES if name in names)


def resolve_actors(
    requested: tuple[str, ...] | None, config: Config
) -> tuple[str, ...]:
    """Return the actors to run: all of the node's kind, or the requested subset.

    A follower node (``WEALL_UPSTREAM_URL`` set) runs the follower in the
    producer's place.

    Raises:
        ConfigError: ``requested`` names an actor that this kind of node
            does not run.
    """
    allowed = FOLLOWER_ACTOR_NAMES if config.follower else ACTOR_NAMES
    if requested is None:
        return tuple(allowed)
    wrong = [name for name in requested if name not in allowed]
    if wrong:
        kind = (
            "a follower node (WEALL_UPSTREAM_URL set)"
            if config.follower
            else "a producer node"
        )
        raise ConfigError(
            "--actors", ",".join(requested), f"{kind} runs some of {','.join(allowed)}"
        )
    return requested


def build_specs(
    actors: Sequence[str], *, api_workers: int = 1, metrics_dir: Path | None = None
) -> list[ActorSpec]:
    """Build the child specs of the real actors, each run as ``weall actor NAME``.

    With ``api_workers`` above 1 the api runs as that many processes,
    ``api``, ``api-2``, ..., which share its port through SO_REUSEPORT. With
    ``metrics_dir`` set, every api process keeps its request metrics in files
    there (``weall.api.metrics_dir``), so that ``/metrics`` sums them all.
    """
    specs = []
    for name in actors:
        copies = api_workers if name == "api" else 1
        env: dict[str, str] = {}
        on_exit: Callable[[int], None] | None = None
        if name == "api" and metrics_dir is not None:
            env = {METRICS_DIR_ENV: str(metrics_dir)}
            on_exit = functools.partial(mark_api_process_dead, metrics_dir)
        for worker in range(1, copies + 1):
            extra = ("--worker", str(worker)) if copies > 1 else ()
            specs.append(
                ActorSpec(
                    name=name if worker == 1 else f"{name}-{worker}",
                    argv=(sys.executable, "-m", "weall", "actor", name, *extra),
                    restart=RestartType.PERMANENT,
                    shutdown_grace_s=DRAIN_GRACE_S[name] + KILL_MARGIN_S,
                    start_timeout_s=START_TIMEOUT_S.get(name, DEFAULT_START_TIMEOUT_S),
                    env=env,
                    on_exit=on_exit,
                )
            )
    return specs


def run_supervisor(
    specs: Sequence[ActorSpec],
    config: Config,
    *,
    policy: RestartPolicy | None = None,
    on_start: Callable[[], None] | None = None,
) -> int:
    """Supervise ``specs`` until the node stops and return the exit code.

    Returns 0 after a requested stop, 1 after giving up on an actor, and 78
    when another supervisor has locked the control socket, an actor exited
    with code 78 or ``on_start`` failed. Logging goes to stdout with the
    actors' output, as the supervisor's own actor ``supervisor``.
    """
    logs.setup(
        "supervisor",
        config.log_level,
        config.log_format,
        stream=sys.stdout,
        prefix=True,
    )
    supervisor = Supervisor(specs, config, policy=policy, on_start=on_start)
    try:
        trio.run(supervisor.run)
    except (StartupError, ActorConfigError) as exc:
        _ignore_stop_signals()
        print(f"weall supervise: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except GaveUpError as exc:
        _ignore_stop_signals()
        print(f"weall supervise: {exc}", file=sys.stderr)
        return 1
    _ignore_stop_signals()
    return 0


def _ignore_stop_signals() -> None:
    """Ignore SIGTERM and SIGINT once supervision has ended.

    Trio restores the default handlers when its run returns, so a process
    manager's repeated SIGTERM, arriving during the last clean-up, would
    otherwise kill a supervisor that already stopped every actor and turn
    its exit code into -15.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _supervise_command(args: argparse.Namespace) -> int:
    try:
        config = load()
        actors = resolve_actors(args.actors, config)
    except ConfigError as exc:
        print(f"weall supervise: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.setup(
        "supervisor",
        config.log_level,
        config.log_format,
        stream=sys.stdout,
        prefix=True,
    )
    # Imported here: the bootstrap pulls in storage and protocol code that
    # the control commands do not need.
    from weall.bootstrap import prepare_node

    try:
        prepare_node(config, actors)
    except (StartupError, ConfigError) as exc:
        print(f"weall supervise: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if "api" not in actors:
        return run_supervisor(build_specs(actors), config)
    shared = metrics_dir(config.control_socket)
    specs = build_specs(actors, api_workers=config.api_workers, metrics_dir=shared)
    owned = False

    def take_metrics_dir() -> None:
        # Runs once this supervisor holds its control lock, so the directory
        # is its own from here on.
        nonlocal owned
        reset_metrics_dir(shared)
        owned = True

    try:
        return run_supervisor(specs, config, on_start=take_metrics_dir)
    finally:
        # The files live in memory-backed storage, which a stopped node
        # must not keep using.
        if owned:
            remove_metrics_dir(shared)


def _status_command(args: argparse.Namespace) -> int:
    config = load()
    reply = trio.run(call_supervisor, config.control_socket, "status")
    reply.pop("ok", None)
    reply.pop("id", None)
    if config.follower:
        reply["follower"] = trio.run(read_follower_summary, config.producer_socket)
    if args.json:
        print(orjson.dumps(reply, option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_status_table(reply))
        if config.follower:
            print(describe_follower(reply["follower"]))
    if args.check:
        problems = unhealthy(reply)
        if problems:
            print(f"weall status: not healthy: {', '.join(problems)}", file=sys.stderr)
            return 1
    return 0


def unhealthy(reply: Mapping[str, Any]) -> list[str]:
    """List the supervisor and actors of a status reply that are not running."""
    problems = []
    if reply["state"] != "running":
        problems.append(f"supervisor {reply['state']}")
    for actor in reply["actors"]:
        if actor["state"] != "running":
            problems.append(f"{actor['name']} {actor['state']}")
    return problems


def _restart_command(args: argparse.Namespace) -> int:
    config = load()
    call = functools.partial(
        call_supervisor,
        config.control_socket,
        "restart",
        actor=args.actor,
        timeout_s=RESTART_TIMEOUT_S,
    )
    actor = trio.run(call)["actor"]
    if actor["state"] != "running":
        raise WeallError(
            f"{args.actor} did not start again: state {actor['state']}, "
            f"last exit {describe_exit(actor['last_exit'])}"
        )
    print(f"restarted {args.actor} pid={actor['pid']}")
    return 0


def _stop_command(args: argparse.Namespace) -> int:
    config = load()
    path = config.control_socket
    trio.run(call_supervisor, path, "stop")
    if args.no_wait:
        print("stop requested")
        return 0
    if not trio.run(wait_supervisor_gone, path, args.timeout):
        raise WeallError(
            f"supervisor still running {args.timeout:g} s after the stop request"
        )
    print("stopped")
    return 0


def describe_exit(last_exit: Mapping[str, Any] | None) -> str:
    """Describe a ``last_exit`` object of the status reply in a few words."""
    if not last_exit:
        return "-"
    if last_exit.get("signal"):
        text = f"killed by {last_exit['signal']}"
    elif last_exit.get("code") is not None:
        text = f"exit code {last_exit['code']}"
    else:
        text = "not started"
    reason = last_exit.get("reason")
    return f"{text} ({reason})" if reason else text


def format_duration(seconds: float | None) -> str:
    """Format seconds as ``45s``, ``12m03s``, ``5h07m`` or ``3d04h``."""
    if seconds is None:
        return "-"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_status_table(reply: Mapping[str, Any]) -> str:
    """Render a status reply as a header line and one table row per actor."""
    header = (
        f"supervisor pid={reply['pid']} state={reply['state']} "
        f"uptime={format_duration(reply['uptime_s'])}"
    )
    rows = [("ACTOR", "STATE", "PID", "UPTIME", "RESTARTS", "LAST EXIT")]
    for actor in reply["actors"]:
        rows.append(
            (
                actor["name"],
                actor["state"],
                "-" if actor["pid"] is None else str(actor["pid"]),
                format_duration(actor["uptime_s"]),
                str(actor["restarts"]),
                describe_exit(actor["last_exit"]),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    lines = [header]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)]
        lines.append("  ".join([*cells, row[5]]))
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    _register_supervise(subparsers)
    _register_control_commands(subparsers)


def _register_supervise(subparsers: argparse._SubParsersAction[Any]) -> None:
    supervise = subparsers.add_parser(
        "supervise",
        help="run the whole node, every actor supervised",
        description=(
            "Start the actors in order (the producer or follower first, the api last), "
            "restart any that dies or stops sending heartbeats, and stop them in "
            "reverse order on SIGTERM or Ctrl-C (a second Ctrl-C kills them at once). "
            "All output goes to stdout, one line per record, prefixed with the actor "
            "name. Exit codes: 0 after a stop, 1 after giving up on an actor, 78 on "
            "invalid settings or a rejected start, the supervisor's own or an actor's."
        ),
    )
    supervise.add_argument(
        "--actors",
        metavar="LIST",
        type=parse_actor_list,
        default=None,
        help=(
            f"comma-separated actors to run (default: {','.join(ACTOR_NAMES)}, or "
            f"{','.join(FOLLOWER_ACTOR_NAMES)} on a follower node)"
        ),
    )
    supervise.set_defaults(func=_supervise_command)


def _register_control_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    status = subparsers.add_parser(
        "status",
        help="show the actors of a running supervisor",
        description=(
            "Show the state, pid, uptime, restarts and last exit of each actor, and "
            "on a follower node its sync state: upstream, heights, rate, time left "
            "and any rejection. Exit codes: 0, or 1 when no supervisor is running "
            "or, with --check, when an actor is not running."
        ),
    )
    status.add_argument(
        "--json", action="store_true", help="print the status reply as JSON"
    )
    status.add_argument(
        "--check",
        action="store_true",
        help=(
            "exit 1 unless the supervisor and every one of its actors are running "
            "(for container health checks)"
        ),
    )
    status.set_defaults(func=_status_command)

    restart = subparsers.add_parser(
        "restart",
        help="restart one actor of a running supervisor",
        description=(
            "Stop one actor (SIGTERM, then SIGKILL after its grace) and start it "
            "again at once, without touching the others. Waits until it is ready."
        ),
    )
    restart.add_argument(
        "actor", metavar="ACTOR", help=f"one of {', '.join(ACTOR_NAMES)}"
    )
    restart.set_defaults(func=_restart_command)

    stop = subparsers.add_parser(
        "stop",
        help="stop a running supervisor",
        description="Stop every actor in reverse start order, then the supervisor.",
    )
    stop.add_argument(
        "--no-wait", action="store_true", help="return once the stop was requested"
    )
    stop.add_argument(
        "--timeout",
        type=float,
        default=40.0,
        metavar="SECONDS",
        help="how long to wait for the supervisor to exit (default: 40)",
    )
    stop.set_defaults(func=_stop_command)
