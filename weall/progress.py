"""Progress reporting for long commands: verify, backup, restore, a sync.

``Progress`` counts work done (blocks, bytes, ...) against an optional total
and reports the count, the rate and the time left in one of three ways:

- on a terminal, one line on the stream that is redrawn in place (carriage
  return and erase-line), at most ``redraw_s`` apart;
- on any other stream, a plain line every ``interval_s`` seconds, so a log
  file or a pipe gets a few lines, not thousands;
- with ``logger`` given, an INFO record every ``interval_s`` seconds in the
  node's key=value style, for work that runs inside an actor.

Every mode reports once more when the work ends. Typical use::

    with Progress("verify", total=head + 1, unit="blocks") as progress:
        for block in blocks:
            check(block)
            progress.advance()
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, TextIO, TypeVar

__all__ = [
    "Progress",
    "ProgressStats",
    "format_bytes",
    "format_duration",
    "run_watched",
]

T = TypeVar("T")

DEFAULT_INTERVAL_S: Final = 5.0
DEFAULT_REDRAW_S: Final = 0.1
# The rate is measured over the most recent samples within this many seconds,
# so the time left follows a change of pace instead of the whole run's mean.
RATE_WINDOW_S: Final = 10.0
_ERASE_LINE: Final = "\x1b[K"


@dataclass(frozen=True)
class ProgressStats:
    """A snapshot of a ``Progress``: counts, elapsed seconds, rate and time left."""

    label: str
    count: int
    total: int | None
    elapsed_s: float
    rate_per_s: float | None
    eta_s: float | None
    phase: str | None
    done: bool

    @property
    def fraction(self) -> float | None:
        if self.total is None or self.total <= 0:
            return None
        return min(1.0, self.count / self.total)


def format_bytes(count: float) -> str:
    """Format a byte count with a binary unit: ``512 B``, ``3.4 MiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover - the loop always returns


def format_duration(seconds: float) -> str:
    """Format seconds as ``4.2 s``, ``3 min 05 s`` or ``2 h 07 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class Progress:
    """Count work against an optional total and report it while it runs.

    Args:
        label: the name of the work, first on every line (``verify``).
        total: the amount of work if known, in ``unit``. ``set_total`` may set
            it later.
        unit: what is counted. ``bytes`` formats counts with binary units.
        stream: where lines go; the default is ``sys.stderr`` at creation.
        logger: report through this logger at INFO instead of a stream.
        interval_s: seconds between plain lines or log records.
        redraw_s: minimum seconds between two redraws on a terminal.
        clock: monotonic seconds; tests pass a fake one.
    """

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        unit: str = "items",
        stream: TextIO | None = None,
        logger: logging.Logger | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        redraw_s: float = DEFAULT_REDRAW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0 (got {interval_s})")
        self.label = label
        self.unit = unit
        self._total = total
        self._count = 0
        self._phase: str | None = None
        self._logger = logger
        self._stream = stream if stream is not None else sys.stderr
        self._terminal = logger is None and _is_terminal(self._stream)
        self._interval_s = redraw_s if self._terminal else interval_s
        self._clock = clock
        self._started = clock()
        self._samples: deque[tuple[float, int]] = deque([(self._started, 0)])
        self._last_report = self._started
        self._closed = False
        if self._terminal:
            self._draw()

    @property
    def terminal(self) -> bool:
        """Whether the report is a line redrawn in place."""
        return self._terminal

    def set_total(self, total: int | None) -> None:
        self._total = total
        self._maybe_report()

    def set_phase(self, phase: str | None) -> None:
        """Name the current step (``hashing``), shown after the counts."""
        self._phase = phase
        self._maybe_report(force=self._terminal)

    def advance(self, amount: int = 1) -> None:
        self.update(self._count + amount)

    def update(self, count: int) -> None:
        """Set the amount of work done so far."""
        self._count = count
        now = self._clock()
        if now - self._samples[-1][0] >= 0.05:
            self._samples.append((now, count))
            while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
                self._samples.popleft()
        self._maybe_report()

    def statistics(self) -> ProgressStats:
        now = self._clock()
        elapsed = now - self._started
        rate = self._rate(now)
        eta = None
        if rate and self._total is not None and not self._closed:
            eta = max(0.0, (self._total - self._count) / rate)
        return ProgressStats(
            label=self.label,
            count=self._count,
            total=self._total,
            elapsed_s=elapsed,
            rate_per_s=rate,
            eta_s=eta,
            phase=self._phase,
            done=self._closed,
        )

    def close(self) -> None:
        """Report the final counts. Later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        self._phase = None
        if self._terminal:
            self._draw()
            self._write("\n")
        else:
            self._emit(self.describe(self.statistics()))

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        elif self._terminal and not self._closed:
            # End the redrawn line, so the error message starts on its own line.
            self._closed = True
            self._write("\n")
        else:
            self._closed = True

    def describe(self, stats: ProgressStats) -> str:
        """Format one report: ``verify: 120/500 blocks (24%), 48 blocks/s, 8.0 s left``."""
        parts = [f"{self.label}: {self._amount(stats.count, stats.total)}"]
        if stats.fraction is not None:
            parts[0] += f" ({stats.fraction:.0%})"
        if stats.done:
            parts.append(f"done in {format_duration(stats.elapsed_s)}")
            overall = stats.count / stats.elapsed_s if stats.elapsed_s > 0 else None
            if overall:
                parts.append(self._rate_text(overall))
            return ", ".join(parts)
        if stats.rate_per_s is not None:
            parts.append(self._rate_text(stats.rate_per_s))
        if stats.eta_s is not None:
            parts.append(f"{format_duration(stats.eta_s)} left")
        else:
            parts.append(f"{format_duration(stats.elapsed_s)} elapsed")
        if stats.phase:
            parts.append(stats.phase)
        return ", ".join(parts)

    # -- internals -------------------------------------------------------------------

    def _rate(self, now: float) -> float | None:
        first_time, first_count = self._samples[0]
        span = now - first_time
        if span <= 0 or (self._count == first_count and span < 1.0):
            return None
        return (self._count - first_count) / span

    def _amount(self, count: int, total: int | None) -> str:
        if self.unit == "bytes":
            done = format_bytes(count)
            return done if total is None else f"{done} of {format_bytes(total)}"
        return (
            f"{count} {self.unit}" if total is None else f"{count}/{total} {self.unit}"
        )

    def _rate_text(self, rate: float) -> str:
        if self.unit == "bytes":
            return f"{format_bytes(rate)}/s"
        return (
            f"{rate:.0f} {self.unit}/s" if rate >= 10 else f"{rate:.1f} {self.unit}/s"
        )

    def _maybe_report(self, *, force: bool = False) -> None:
        if self._closed:
            return
        now = self._clock()
        if not force and now - self._last_report < self._interval_s:
            return
        self._last_report = now
        if self._terminal:
            self._draw()
        else:
            self._emit(self.describe(self.statistics()))

    def _draw(self) -> None:
        line = self.describe(self.statistics())
        self._write(f"\r{line}{_ERASE_LINE}")

    def _emit(self, line: str) -> None:
        if self._logger is not None:
            self._log(self.statistics())
            return
        self._write(line + "\n")

    def _log(self, stats: ProgressStats) -> None:
        assert self._logger is not None
        self._logger.info(
            "progress task=%s count=%d total=%s rate_per_s=%s eta_s=%s done=%s",
            stats.label,
            stats.count,
            "none" if stats.total is None else stats.total,
            "none" if stats.rate_per_s is None else f"{stats.rate_per_s:.1f}",
            "none" if stats.eta_s is None else f"{stats.eta_s:.0f}",
            str(stats.done).lower(),
        )

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            # A closed or broken stream (a pipe whose reader left) must not stop the work.
            pass


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def run_watched(
    work: Callable[[], T],
    progress: Progress,
    poll: Callable[[Progress], None],
    *,
    poll_s: float = 0.2,
) -> T:
    """Run ``work`` in a worker thread and call ``poll(progress)`` until it ends.

    This reports on a blocking call that cannot report by itself (a SQLite
    ``VACUUM INTO``, a file copy): ``poll`` measures what the call produced so
    far, for example the size of the file it writes, and updates ``progress``.

    Returns:
        What ``work`` returned. An exception raised by ``work`` is raised here.

    NOTE: a KeyboardInterrupt stops the waiting, not the worker thread, so the
    process exits only once ``work`` has finished and cleaned up after itself.
    """
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(work())
        except BaseException as exc:  # re-raised in the calling thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"progress-{progress.label}")
    thread.start()
    while thread.is_alive():
        poll(progress)
        thread.join(poll_s)
    if errors:
        raise errors[0]
    return results[0]
