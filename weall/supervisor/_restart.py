"""Restart backoff and the restart budget."""

from __future__ import annotations

import collections
import random

from weall.supervisor.spec import RestartPolicy

__all__ = ["RestartBudget", "backoff_delay"]


def backoff_delay(
    failures: int, policy: RestartPolicy, rng: random.Random | None = None
) -> float:
    """Return the delay in seconds before the restart that follows a failure.

    The nominal delay is ``backoff_base_s * 2 ** (failures - 1)``, capped at
    ``backoff_cap_s``. Jitter takes up to ``backoff_jitter`` of it away, so
    actors that fail together do not restart in lockstep and the cap is never
    exceeded.

    Args:
        failures: consecutive failures so far, at least 1.
        policy: the base, cap and jitter.
        rng: the random source; the module's by default.
    """
    if failures < 1:
        raise ValueError(f"failures must be >= 1 (got {failures})")
    # Past 2**64 the cap has long been reached; the bound avoids huge floats.
    exponent = min(failures - 1, 64)
    nominal = min(policy.backoff_cap_s, policy.backoff_base_s * 2.0**exponent)
    draw = (rng or random).random()
    return nominal * (1.0 - policy.backoff_jitter * draw)


class RestartBudget:
    """Restart times of one actor within the sliding window of the policy."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.max_restarts = policy.max_restarts
        self.window_s = policy.window_s
        self._times: collections.deque[float] = collections.deque()

    def count(self, now: float) -> int:
        """Return the restarts recorded within the window that ends at ``now``."""
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        return len(self._times)

    def try_record(self, now: float) -> bool:
        """Record a restart at ``now``, or return False if it would exceed the budget."""
        if self.count(now) >= self.max_restarts:
            return False
        self._times.append(now)
        return True
