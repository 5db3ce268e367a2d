"""Lifecycle states of a supervised actor and the transitions between them.

::

    STOPPED -> STARTING -> RUNNING -> STOPPING -> STOPPED
                  |           |
                  +-----------+--> BACKOFF -> STARTING
                  |           |
                  +-----------+--> EXITED, FATAL
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["TRANSITIONS", "ActorState", "InvalidTransition", "check_transition"]


class ActorState(enum.Enum):
    """The lifecycle state of one actor, as ``weall status`` shows it."""

    # Not running and not due to run: before the first start, or after a
    # requested stop or restart took it down.
    STOPPED = "stopped"
    # Spawned; the supervisor waits for its ready report.
    STARTING = "starting"
    # Reported ready; the supervisor watches its heartbeats.
    RUNNING = "running"
    # SIGTERM sent on request (stop or restart); waiting for it to exit.
    STOPPING = "stopping"
    # Exited without being asked; waiting out the backoff delay before the
    # next start.
    BACKOFF = "backoff"
    # Exited, and its restart type rules out another start.
    EXITED = "exited"
    # Failed more often than the restart budget allows; the supervisor gave up
    # and stops the node.
    FATAL = "fatal"


TRANSITIONS: Final[dict[ActorState, frozenset[ActorState]]] = {
    ActorState.STOPPED: frozenset({ActorState.STARTING}),
    # -> STOPPED: it exited on its own while the node was stopping.
    ActorState.STARTING: frozenset(
        {
            ActorState.RUNNING,
            ActorState.STOPPING,
            ActorState.STOPPED,
            ActorState.BACKOFF,
            ActorState.EXITED,
            ActorState.FATAL,
        }
    ),
    ActorState.RUNNING: frozenset(
        {
            ActorState.STOPPING,
            ActorState.STOPPED,
            ActorState.BACKOFF,
            ActorState.EXITED,
            ActorState.FATAL,
        }
    ),
    # A requested stop ends in STOPPED, even when the actor exits on its own
    # during the grace.
    ActorState.STOPPING: frozenset({ActorState.STOPPED}),
    ActorState.BACKOFF: frozenset({ActorState.STARTING, ActorState.STOPPED}),
    # Only ``weall restart`` starts an exited actor again.
    ActorState.EXITED: frozenset({ActorState.STARTING}),
    ActorState.FATAL: frozenset(),
}


class InvalidTransition(RuntimeError):
    """A state change that ``TRANSITIONS`` does not allow: a supervisor bug."""

    def __init__(self, actor: str, old: ActorState, new: ActorState) -> None:
        super().__init__(
            f"actor {actor}: invalid state change {old.name} -> {new.name}"
        )


def check_transition(actor: str, old: ActorState, new: ActorState) -> None:
    """Raise ``InvalidTransition`` unless ``old -> new`` is allowed."""
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(actor, old, new)
