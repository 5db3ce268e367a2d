"""Capped exponential backoff for operations that the pinner and healer retry."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays of one retried operation: ``first_s``, doubling up to ``max_s``.

    ``failures`` counts the failures since the last success, so a caller can
    log the first failure, stay quiet while they repeat, and log one
    ``recovered errors=N`` line at the next success.
    """

    first_s: float = 1.0
    max_s: float = 60.0
    failures: int = 0

    def fail(self) -> float:
        """Count a failure and return the seconds to wait before the next attempt."""
        # The exponent is capped so that the float never overflows.
        delay: float = min(self.max_s, self.first_s * 2.0 ** min(self.failures, 60))
        self.failures += 1
        return delay

    def succeed(self) -> int:
        """Reset the count and return how many failures came before this success."""
        failures, self.failures = self.failures, 0
        return failures

    def should_log(self) -> bool:
        """Return whether the failure just counted should be logged: the 1st, 2nd, 4th, 8th ..."""
        count = self.failures
        return count > 0 and count & (count - 1) == 0
