"""Supervision of the actor processes, modelled on Erlang/OTP supervisors.

``Supervisor`` takes a list of ``ActorSpec`` and runs one OS process per spec:
it starts them in order, restarts the one that dies or hangs, and stops them
all in reverse order. ``weall supervise`` builds the specs of the real actors
(see ``weall.supervisor.cli.build_specs``); tests pass their own.
"""

from __future__ import annotations

from weall.supervisor._child import ActorStatus, ExitStatus
from weall.supervisor._restart import RestartBudget, backoff_delay
from weall.supervisor.spec import ActorSpec, RestartPolicy, RestartType
from weall.supervisor.state import (
    TRANSITIONS,
    ActorState,
    InvalidTransition,
    check_transition,
)
from weall.supervisor.supervisor import (
    ActorConfigError,
    GaveUpError,
    Supervisor,
    SupervisorStatistics,
)

__all__ = [
    "TRANSITIONS",
    "ActorConfigError",
    "ActorSpec",
    "ActorState",
    "ActorStatus",
    "ExitStatus",
    "GaveUpError",
    "InvalidTransition",
    "RestartBudget",
    "RestartPolicy",
    "RestartType",
    "Supervisor",
    "SupervisorStatistics",
    "backoff_delay",
    "check_transition",
]
