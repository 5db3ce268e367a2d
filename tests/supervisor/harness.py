"""Run the generic supervisor over fake actors, the way ``weall supervise`` runs real ones.

``HARNESS_ACTORS`` lists the actor names in start order. Optional settings:
``HARNESS_RESTART_<NAME>`` (permanent, transient, temporary),
``HARNESS_ARGV_<NAME>`` (a command line that replaces the fake actor's),
``HARNESS_GRACE_S``, ``HARNESS_START_TIMEOUT_S``, ``HARNESS_BACKOFF_BASE_S``,
``HARNESS_BACKOFF_CAP_S``, ``HARNESS_BACKOFF_RESET_S`` and
``HARNESS_STOP_TIMEOUT_S``. The restart budget comes from the node settings
``WEALL_RESTART_MAX`` and ``WEALL_RESTART_WINDOW_S``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from weall.config import load
from weall.supervisor import ActorSpec, RestartPolicy, RestartType
from weall.supervisor.cli import run_supervisor

FAKE_ACTOR = Path(__file__).with_name("fake_actor.py")


def _seconds(variable: str, default: float) -> float:
    return float(os.environ.get(variable, default))


def _argv(name: str) -> tuple[str, ...]:
    custom = os.environ.get(f"HARNESS_ARGV_{name.upper()}")
    if custom:
        return tuple(custom.split())
    return (sys.executable, str(FAKE_ACTOR), name)


def main() -> int:
    config = load()
    specs = [
        ActorSpec(
            name=name,
            argv=_argv(name),
            restart=RestartType(
                os.environ.get(f"HARNESS_RESTART_{name.upper()}", "permanent")
            ),
            shutdown_grace_s=_seconds("HARNESS_GRACE_S", 2.0),
            start_timeout_s=_seconds("HARNESS_START_TIMEOUT_S", 10.0),
        )
        for name in os.environ["HARNESS_ACTORS"].split(",")
    ]
    policy = RestartPolicy(
        max_restarts=config.restart_max,
        window_s=config.restart_window_s,
        backoff_base_s=_seconds("HARNESS_BACKOFF_BASE_S", 0.05),
        backoff_cap_s=_seconds("HARNESS_BACKOFF_CAP_S", 0.5),
        backoff_reset_s=_seconds("HARNESS_BACKOFF_RESET_S", 10.0),
        stop_timeout_s=_seconds("HARNESS_STOP_TIMEOUT_S", 27.0),
    )
    return run_supervisor(specs, config, policy=policy)


if __name__ == "__main__":
    sys.exit(main())
