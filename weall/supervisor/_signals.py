"""SIGTERM and SIGINT handling of the supervisor process."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Final

import trio

__all__ = ["STOP_SIGNALS", "receive_stop_signals"]

log = logging.getLogger(__name__)

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


async def receive_stop_signals(
    on_signal: Callable[[str], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``on_signal`` with the signal name for every SIGTERM and SIGINT.

    While this runs, SIGINT no longer raises ``KeyboardInterrupt``. The
    receiver is installed before ``task_status.started()``, so no signal sent
    after that is lost. Signals of one kind that arrive before the previous one
    was handled may be merged into one call.
    """
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            log.info("received signal=%s", name)
            on_signal(name)
