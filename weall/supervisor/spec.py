"""Child specs and restart policy, in the sense of Erlang/OTP supervisors."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["ActorSpec", "RestartPolicy", "RestartType"]


class RestartType(enum.Enum):
    """When a child that exited on its own is started again."""

    # Always restarted, whatever its exit status.
    PERMANENT = "permanent"
    # Restarted only after an abnormal exit: a non-zero code or a signal.
    TRANSIENT = "transient"
    # Never restarted.
    TEMPORARY = "temporary"

    def restarts_after(self, returncode: int | None) -> bool:
        """Return whether a child that exited with ``returncode`` is restarted.

        ``returncode`` is ``None`` when the process could not be spawned at
        all, which counts as abnormal.
        """
        if self is RestartType.PERMANENT:
            return True
        if self is RestartType.TRANSIENT:
            return returncode != 0
        return False


@dataclass(frozen=True)
class ActorSpec:
    """How to run and stop one actor process.

    Attributes:
        name: the actor name, unique within one supervisor; it prefixes the
            actor's output lines.
        argv: the command line; ``argv[0]`` is looked up on ``PATH``.
        restart: when the actor is started again after it exits on its own.
        shutdown_grace_s: seconds between SIGTERM and SIGKILL on a stop.
        start_timeout_s: seconds from spawn to the ready report, after which
            the process is killed and the attempt counts as a failure.
        env: variables set for this actor on top of the supervisor's
            environment.
        on_exit: called with the pid after each process of this actor
            exited and was reaped; it must not raise.
    """

    name: str
    argv: tuple[str, ...]
    restart: RestartType = RestartType.PERMANENT
    shutdown_grace_s: float = 5.0
    start_timeout_s: float = 30.0
    env: Mapping[str, str] = field(default_factory=dict)
    on_exit: Callable[[int], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ValueError(
                f"actor name must be non-empty [A-Za-z0-9_-] (got {self.name!r})"
            )
        if not self.argv:
            raise ValueError(f"actor {self.name}: argv must not be empty")
        object.__setattr__(self, "argv", tuple(self.argv))
        _check_seconds(f"actor {self.name}: shutdown_grace_s", self.shutdown_grace_s, 0)
        _check_seconds(
            f"actor {self.name}: start_timeout_s", self.start_timeout_s, 0.01
        )


@dataclass(frozen=True)
class RestartPolicy:
    """Restart limits and timings shared by every actor of one supervisor.

    Attributes:
        max_restarts: restarts allowed per actor within ``window_s``. One more
            makes the supervisor stop the node and exit non-zero.
        window_s: the sliding window in seconds for ``max_restarts``.
        backoff_base_s: the delay before the first restart after a failure.
        backoff_cap_s: the maximum delay; each further failure doubles it.
        backoff_jitter: the fraction of the delay that is randomised, in
            [0, 1). The delay lies in ``[d * (1 - jitter), d]``.
        backoff_reset_s: an actor that stays ready this long starts again
            from ``backoff_base_s`` after its next failure.
        stop_timeout_s: the time limit of a whole stop, all actors together.
            Heroku sends SIGKILL 30 s after SIGTERM, so the default leaves
            3 s of margin.
    """

    max_restarts: int = 5
    window_s: float = 30.0
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 5.0
    backoff_jitter: float = 0.2
    backoff_reset_s: float = 10.0
    stop_timeout_s: float = 27.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0 (got {self.max_restarts})")
        _check_seconds("window_s", self.window_s, 0.001)
        _check_seconds("backoff_base_s", self.backoff_base_s, 0)
        _check_seconds("backoff_cap_s", self.backoff_cap_s, self.backoff_base_s)
        if not 0 <= self.backoff_jitter < 1:
            raise ValueError(
                f"backoff_jitter must be in [0, 1) (got {self.backoff_jitter})"
            )
        _check_seconds("backoff_reset_s", self.backoff_reset_s, 0)
        _check_seconds("stop_timeout_s", self.stop_timeout_s, 0)


def _check_seconds(name: str, value: float, minimum: float) -> None:
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum} (got {value!r})")
