"""``weall actor NAME``: run one actor in the foreground."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Mapping
from typing import Any, Final

from weall import logs
from weall.actors._base import EXIT_CONFIG, EXIT_FAILURE, run_actor
from weall.config import ALL_ACTOR_NAMES, load
from weall.errors import ConfigError

__all__ = ["DRAIN_GRACE_S", "register"]

# Seconds an actor may drain after its first SIGTERM before run() is
# cancelled. The supervisor waits a little longer before it sends SIGKILL.
# The producer finishes or abandons its open block and checkpoints, the
# follower finishes the block it applies, and the api finishes requests in
# flight. The others only drop work in progress.
DRAIN_GRACE_S: Final[Mapping[str, float]] = {
    "producer": 6.0,
    "follower": 6.0,
    "checkpointer": 4.0,
    "pinner": 2.0,
    "healer": 2.0,
    "api": 6.0,
}


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "actor",
        help="run one actor in the foreground",
        description=(
            "Run one actor in the foreground, as the supervisor does. It logs to "
            "stderr and stops on SIGTERM or Ctrl-C. Exit codes: 0 after a stop, "
            "1 on a crash, 78 on invalid settings or a refused start."
        ),
    )
    parser.add_argument(
        "name",
        metavar="NAME",
        choices=ALL_ACTOR_NAMES,
        help=f"one of {', '.join(ALL_ACTOR_NAMES)}",
    )
    parser.add_argument(
        "--worker",
        type=int,
        default=1,
        metavar="N",
        help="which of the WEALL_API_WORKERS api processes this is (api only)",
    )
    parser.set_defaults(func=_run_actor_command)


def _run_actor_command(args: argparse.Namespace) -> int:
    name: str = args.name
    try:
        config = load()
    except ConfigError as exc:
        # Logging is not set up without settings, so this is the CLI's one line.
        print(f"weall actor: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    label = name if args.worker <= 1 else f"{name}-{args.worker}"
    logs.setup(label, config.log_level, config.log_format)
    try:
        module = importlib.import_module(f"weall.actors.{name}")
    except Exception:
        logging.getLogger(f"weall.actors.{name}").exception(
            "cannot import weall.actors.%s", name
        )
        return EXIT_FAILURE
    return run_actor(label, module.run, config, grace_s=DRAIN_GRACE_S[name])
