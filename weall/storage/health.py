"""The journal settings that ``/health`` reports, read from the database's writer.

The api process and the producer may run with different settings (two
containers with their own environment). So the api requests the journal
mode and synchronous level from the producer (or a follower node's follower
actor) over its socket, which reports what it read back from its own
connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from weall.errors import IpcError

if TYPE_CHECKING:
    from weall.config import Config
    from weall.ipc import IpcClient

__all__ = ["STATUS_TIMEOUT_S", "journal_settings"]

log = logging.getLogger(__name__)

STATUS_TIMEOUT_S: Final = 1.0


async def journal_settings(
    writer: IpcClient, config: Config
) -> dict[str, str | bool | int | None]:
    """Return the journal settings and the writer's storage state for ``/health``.

    The keys are ``journal_mode``, ``synchronous``, ``source``,
    ``storage_full`` and ``recent_state_entries``.

    ``source`` is ``"producer"`` or ``"follower"`` when that actor replied
    within ``STATUS_TIMEOUT_S`` with the settings it applied. Otherwise it is
    ``"config"``, and the values are the ones this process's configuration
    sets, which the writer may not have applied. ``storage_full`` is
    whether the writer has paused because the disk is full, and
    ``recent_state_entries`` an upper bound of the state changes waiting to
    be folded into the state table. Each is ``None`` when it did not reply.
    """
    try:
        reply = await writer.call("status", timeout=STATUS_TIMEOUT_S)
    except IpcError as exc:
        log.debug("journal settings not read from the writer: %s", exc)
        reply = {}
    journal_mode = reply.get("journal_mode")
    synchronous = reply.get("synchronous")
    if (
        reply.get("ok")
        and isinstance(journal_mode, str)
        and isinstance(synchronous, str)
    ):
        full = reply.get("storage_full")
        recent = reply.get("recent_state_entries")
        return {
            "journal_mode": journal_mode,
            "synchronous": synchronous,
            "source": "follower" if config.follower else "producer",
            "storage_full": full if isinstance(full, bool) else None,
            "recent_state_entries": (
                recent
                if isinstance(recent, int) and not isinstance(recent, bool)
                else None
            ),
        }
    return {
        "journal_mode": "wal",
        "synchronous": config.synchronous,
        "source": "config",
        "storage_full": None,
        "recent_state_entries": None,
    }
