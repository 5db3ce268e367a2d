"""Following the committed chain from a read-only connection."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import trio

from weall.actors._base import stop_event
from weall.config import Config
from weall.errors import StorageError
from weall.storage import queries
from weall.storage.reader import ReadPool

__all__ = ["follow_heads"]

log = logging.getLogger(__name__)


async def follow_heads(
    config: Config, pool: ReadPool, poll_s: float = 0.2
) -> AsyncIterator[dict[str, Any]]:
    """Yield the tip block each time the height changes, until the actor stops."""
    last_height = -1
    while not stop_event().is_set():
        try:
            head = (
                await pool.run(queries.head_header) if config.db_path.exists() else None
            )
        except StorageError as exc:
            log.warning("cannot read the chain head: %s", exc)
            head = None
        if head is not None and head["height"] != last_height:
            last_height = head["height"]
            yield head
        with trio.move_on_after(poll_s):
            await stop_event().wait()
